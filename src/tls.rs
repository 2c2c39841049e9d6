//! Built-in TLS (`--tls-cert`, `--tls-key`): the rustls server configuration from PEM
//! files, with the `ring` provider.
//!
//! Every failure is an `InvalidInput` error that names the flag and the file, so that a
//! misconfigured hub says what to fix and exits instead of serving plain text.

use std::io::{Error, ErrorKind};
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server configuration for the certificate chain in `cert` (PEM, leaf first) and
/// the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn load(cert: &Path, key: &Path) -> std::io::Result<ServerConfig> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            invalid(format!(
                "--tls-key {} does not go with the certificate in --tls-cert {}: {e}",
                key.display(),
                cert.display()
            ))
        })
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

/// The file's bytes; an error names `flag` and the file.
fn read(flag: &str, path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            ErrorKind::NotFound => "no such file".to_owned(),
            ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        invalid(format!("{flag} {}: {why}", path.display()))
    })
}

fn bad_pem(flag: &str, path: &Path, e: pem::Error) -> Error {
    invalid(format!("{flag} {}: not valid PEM: {e}", path.display()))
}

fn read_certs(path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let pem = read("--tls-cert", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem("--tls-cert", path, e))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "--tls-cert {}: contains no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> std::io::Result<PrivateKeyDer<'static>> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(format!(
            "--tls-key {}: no private key (expected PEM \"-----BEGIN PRIVATE KEY-----\", \
             RSA or EC)",
            path.display()
        )),
        e => bad_pem("--tls-key", path, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, PEM, for `localhost`.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wxhub-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn err(cert: &Path, key: &Path) -> String {
        let e = load(cert, key).expect_err("must fail");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        e.to_string()
    }

    #[test]
    fn loads_a_pair_and_names_the_file_when_it_cannot() {
        let d = dir("unit");
        let (cert_pem, key_pem) = pair();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        assert!(load(&cert, &key).is_ok());

        let missing = d.join("missing.pem");
        let e = err(&missing, &key);
        assert!(
            e.starts_with("--tls-cert ") && e.ends_with("missing.pem: no such file"),
            "{e}"
        );
        let e = err(&cert, &missing);
        assert!(
            e.starts_with("--tls-key ") && e.contains("no such file"),
            "{e}"
        );

        let text = d.join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let e = err(&text, &key);
        assert!(e.contains("text.pem: contains no certificate"), "{e}");
        let e = err(&cert, &text);
        assert!(
            e.contains("--tls-key") && e.contains("text.pem: no private key"),
            "{e}"
        );
        // The key where the certificate goes, and the other way round.
        let e = err(&key, &cert);
        assert!(
            e.contains("--tls-cert") && e.contains("contains no certificate"),
            "{e}"
        );
        std::fs::write(
            &text,
            "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(&text, &key);
        assert!(
            e.contains("--tls-cert") && e.contains("not valid PEM"),
            "{e}"
        );

        // A key that is not the certificate's.
        let other = d.join("other-key.pem");
        std::fs::write(&other, pair().1).unwrap();
        let e = err(&cert, &other);
        assert!(e.contains("other-key.pem does not go with"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
