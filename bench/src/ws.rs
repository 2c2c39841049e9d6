//! A minimal WebSocket client (RFC 6455): the opening handshake, a frame parser that
//! works in place on one read buffer, and masked frame encoding.
//!
//! Hand-written rather than a general client library because the load generator shares
//! the machine's cores with the hub it measures: parsing a frame here is a few compares
//! on a buffer, with no allocation per message. No extensions are negotiated, so frames
//! carry no RSV bits; fragmented messages are reassembled.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest message the client accepts (whole, or reassembled from fragments).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One complete message or control frame, borrowed from the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A frame header: (fin, opcode, header length, payload length).
fn parse_header(b: &[u8]) -> io::Result<Option<(bool, u8, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err(proto_err("RSV bits set without an extension"));
    }
    if b[1] & 0x80 != 0 {
        return Err(proto_err("masked frame from the server"));
    }
    let fin = b[0] & 0x80 != 0;
    let op = b[0] & 0x0f;
    let (hlen, len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[2..10]);
            let n = u64::from_be_bytes(v);
            if n > MAX_MESSAGE as u64 {
                return Err(proto_err(format!("frame of {n} bytes")));
            }
            (10, n as usize)
        }
        n => (2, n as usize),
    };
    Ok(Some((fin, op, hlen, len)))
}

/// The read side: one buffer, filled by `fill`, parsed in place by `next_buffered`.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Bytes the next frame needs in the buffer, so `fill` can grow it once.
    need: usize,
    /// A fragmented message being reassembled, and its opcode.
    frag: Vec<u8>,
    frag_op: Option<u8>,
}

impl Reader {
    /// The next complete frame already in the buffer, or `None` if more must be read.
    pub fn next_buffered(&mut self) -> io::Result<Option<Frame<'_>>> {
        loop {
            let avail = &self.buf[self.pos..self.len];
            let Some((fin, op, hlen, len)) = parse_header(avail)? else {
                self.need = hlen_guess(avail);
                return Ok(None);
            };
            if avail.len() < hlen + len {
                self.need = hlen + len;
                return Ok(None);
            }
            self.need = 0;
            let start = self.pos + hlen;
            let end = start + len;
            self.pos = end;
            match op {
                OP_TEXT | OP_BINARY if fin => {
                    if self.frag_op.is_some() {
                        return Err(proto_err("new message inside a fragmented one"));
                    }
                    let p = &self.buf[start..end];
                    return Ok(Some(if op == OP_TEXT {
                        Frame::Text(p)
                    } else {
                        Frame::Binary(p)
                    }));
                }
                OP_TEXT | OP_BINARY => {
                    if self.frag_op.is_some() {
                        return Err(proto_err("new message inside a fragmented one"));
                    }
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.buf[start..end]);
                    self.frag_op = Some(op);
                }
                OP_CONT => {
                    let Some(first) = self.frag_op else {
                        return Err(proto_err("continuation with no start"));
                    };
                    if self.frag.len() + len > MAX_MESSAGE {
                        return Err(proto_err("fragmented message too large"));
                    }
                    self.frag.extend_from_slice(&self.buf[start..end]);
                    if fin {
                        self.frag_op = None;
                        return Ok(Some(if first == OP_TEXT {
                            Frame::Text(&self.frag)
                        } else {
                            Frame::Binary(&self.frag)
                        }));
                    }
                }
                OP_PING => return Ok(Some(Frame::Ping(&self.buf[start..end]))),
                OP_PONG => return Ok(Some(Frame::Pong)),
                OP_CLOSE => {
                    let p = &self.buf[start..end];
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    return Ok(Some(Frame::Close(code)));
                }
                other => return Err(proto_err(format!("unknown opcode {other}"))),
            }
        }
    }

    /// Reads more bytes from the socket; `Ok(false)` at end of stream. Cancel-safe: a
    /// `fill` dropped before it completes loses nothing.
    pub async fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        let want = self.need.max(self.len + 1);
        if want > self.buf.len() {
            self.buf.resize(want.next_power_of_two(), 0);
        }
        let n = self.rd.read(&mut self.buf[self.len..]).await?;
        if n == 0 {
            return Ok(false);
        }
        self.len += n;
        Ok(true)
    }
}

/// How many bytes an incomplete header needs at least.
fn hlen_guess(b: &[u8]) -> usize {
    match b.get(1).map(|l| l & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// The write side: frames are encoded (masked) into a buffer and written by `flush`.
pub struct Writer {
    wr: OwnedWriteHalf,
    out: Vec<u8>,
    rng: u64,
}

impl Writer {
    fn mask_key(&mut self) -> [u8; 4] {
        // xorshift64: masking keys need not be secret for a load generator on loopback.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    /// Queues one frame; `flush` writes everything queued.
    pub fn push(&mut self, op: u8, payload: &[u8]) {
        let out = &mut self.out;
        out.push(0x80 | op);
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let key = self.mask_key();
        let out = &mut self.out;
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.out.is_empty()
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(B64[(v >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Where and how to connect.
pub struct Target {
    pub addr: SocketAddr,
    /// The Host header.
    pub host: String,
    /// Path and query of the request.
    pub path: String,
}

/// Opens a TCP connection (from `source` if given) and performs the opening handshake,
/// with `query` (`k=v&..`, or empty) added to the target's path.
pub async fn connect(
    target: &Target,
    query: &str,
    source: Option<Ipv4Addr>,
    read_buf: usize,
    seed: u64,
) -> io::Result<(Reader, Writer)> {
    let sock = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let (Some(src), true) = (source, target.addr.is_ipv4()) {
        // Let connect() pick the port, so one source address can reach several
        // destinations with the same port (IP_BIND_ADDRESS_NO_PORT, Linux >= 4.2).
        let one: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a socket we own, with a correctly sized int.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    }
    let mut stream = sock.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let mut rng = seed | 1;
    let mut key = [0u8; 16];
    for chunk in key.chunks_mut(8) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        chunk.copy_from_slice(&rng.to_ne_bytes());
    }
    let sep = match (query.is_empty(), target.path.contains('?')) {
        (true, _) => "",
        (false, true) => "&",
        (false, false) => "?",
    };
    let req = format!(
        "GET {}{sep}{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path,
        target.host,
        base64(&key)
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; read_buf.max(1024)];
    let mut len = 0;
    let head_end = loop {
        if len == buf.len() {
            if len >= 16384 {
                return Err(proto_err("handshake response too long"));
            }
            buf.resize(len * 2, 0);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(proto_err("closed during the handshake"));
        }
        len += n;
        if let Some(p) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        return Err(proto_err(format!("handshake refused: {status}")));
    }
    let (rd, wr) = stream.into_split();
    Ok((
        Reader {
            rd,
            buf,
            pos: head_end,
            len,
            need: 0,
            frag: Vec::new(),
            frag_op: None,
        },
        Writer {
            wr,
            out: Vec::with_capacity(256),
            rng: rng | 1,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_example() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header(&[0x81, 5]).unwrap(), Some((true, 1, 2, 5)));
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x01, 126, 1, 0]).unwrap(),
            Some((false, 1, 4, 256))
        );
        assert!(parse_header(&[0x81, 0x85]).is_err());
        assert!(parse_header(&[0xC1, 1]).is_err());
    }
}
