//! The inbound half of a WebSocket: frames read from the connection with a hard bound on
//! what one peer can make the hub buffer, whatever it declares or withholds.
//!
//! actix-web-actors' own reader appends every chunk the connection yields to one buffer
//! and compares a frame's length with the limit only once the whole frame has arrived,
//! so a header declaring 2^63 bytes made the hub buffer everything sent after it. This
//! reader looks at each frame header as soon as its length bytes are in: a data frame
//! declaring more than the message limit, or a control frame more than 125 bytes, is an
//! error at once. It reads the next chunk only when the buffer holds no whole frame, so
//! the buffer never holds more than one frame (at most the limit plus a 14-byte header)
//! and one chunk. Its errors are typed, so the session picks the close code without
//! reading an error's text.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

/// Largest payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// An empty buffer that has grown past this is released, so a connection that once sent
/// a big message does not keep its capacity while idle.
const KEEP_EMPTY_BUFFER: usize = 4096;

/// Why the inbound stream ended early; each maps to one close code in the session.
#[derive(Debug)]
pub enum ReadError {
    /// 1009: a frame declared a payload bigger than the message limit.
    TooBig,
    /// 1007: a text frame was not UTF-8.
    InvalidUtf8,
    /// 1002: anything else that breaks RFC 6455 (including a control frame over 125
    /// bytes, refused as soon as its header arrives).
    Protocol(ProtocolError),
    /// The connection failed under the reader.
    Payload(PayloadError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooBig => f.write_str("frame exceeds the size limit"),
            ReadError::InvalidUtf8 => f.write_str("text frame is not UTF-8"),
            ReadError::Protocol(e) => write!(f, "protocol error: {e}"),
            ReadError::Payload(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// What a frame header says, once its length bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    control: bool,
    /// The declared payload length.
    len: u64,
}

/// Reads the opcode and the declared length of the frame at the start of `buf`; `None`
/// until the length bytes have arrived.
fn peek_header(buf: &[u8]) -> Option<Header> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let len = match second & 0x7f {
        126 => u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as u64,
        127 => u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
        n => n as u64,
    };
    Some(Header {
        control: first & 0x08 != 0,
        len,
    })
}

/// The client's frames as messages, read from the connection's payload stream.
pub struct FrameReader<S> {
    input: S,
    buf: BytesMut,
    codec: Codec,
    max: u64,
    /// The input ended: what is left in `buf` is an incomplete frame, never completed.
    input_done: bool,
    /// An error was returned; the stream ends.
    failed: bool,
}

impl<S> FrameReader<S> {
    /// A reader for a server endpoint whose messages (and so frames) are at most `max`
    /// bytes.
    pub fn new(input: S, max: usize) -> Self {
        FrameReader {
            input,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max),
            max: max as u64,
            input_done: false,
            failed: false,
        }
    }

    /// Bytes read but not yet handed on (tests).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Refuses the frame at the front of the buffer as soon as its header shows it
    /// breaks a limit; then decodes it if it is whole.
    fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if let Some(header) = peek_header(&self.buf) {
            if header.control && header.len > MAX_CONTROL_PAYLOAD {
                return Err(ReadError::Protocol(ProtocolError::InvalidLength(
                    header.len.min(usize::MAX as u64) as usize,
                )));
            }
            if header.len > self.max {
                return Err(ReadError::TooBig);
            }
        }
        let frame = self.codec.decode(&mut self.buf).map_err(|e| match e {
            ProtocolError::Overflow => ReadError::TooBig,
            e => ReadError::Protocol(e),
        })?;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_EMPTY_BUFFER {
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }
}

/// A frame as the session handles it: text checked as UTF-8.
fn message(frame: Frame) -> Result<Message, ReadError> {
    Ok(match frame {
        Frame::Text(data) => {
            Message::Text(ByteString::try_from(data).map_err(|_| ReadError::InvalidUtf8)?)
        }
        Frame::Binary(data) => Message::Binary(data),
        Frame::Continuation(item) => Message::Continuation(item),
        Frame::Ping(payload) => Message::Ping(payload),
        Frame::Pong(payload) => Message::Pong(payload),
        Frame::Close(reason) => Message::Close(reason),
    })
}

impl<S> Stream for FrameReader<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Message, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.next_frame().and_then(|f| f.map(message).transpose()) {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                Ok(None) => {}
                Err(e) => {
                    this.failed = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.input_done {
                return Poll::Ready(None);
            }
            // No whole frame yet: read one more chunk.
            match Pin::new(&mut this.input).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(ReadError::Payload(e))));
                }
                Poll::Ready(None) => this.input_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    /// A client frame, masked, with the length in the shortest form.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [7u8, 1, 3, 9];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// A payload stream that yields the given chunks, then stays open (`Pending`); with
    /// `trickle`, it is `Pending` after each chunk, as a slow peer's connection is.
    struct Chunks {
        chunks: std::collections::VecDeque<Bytes>,
        trickle: bool,
        paused: bool,
    }

    impl Stream for Chunks {
        type Item = Result<Bytes, PayloadError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.trickle && !std::mem::replace(&mut self.paused, true) {
                return Poll::Pending;
            }
            self.paused = false;
            match self.chunks.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(b))),
                None => Poll::Pending,
            }
        }
    }

    fn chunks(chunks: Vec<Vec<u8>>, trickle: bool) -> Chunks {
        Chunks {
            chunks: chunks.into_iter().map(Bytes::from).collect(),
            trickle,
            paused: false,
        }
    }

    fn reader(chunks_: Vec<Vec<u8>>, max: usize) -> FrameReader<Chunks> {
        FrameReader::new(chunks(chunks_, false), max)
    }

    fn poll(r: &mut FrameReader<Chunks>) -> Poll<Option<Result<Message, ReadError>>> {
        let mut cx = Context::from_waker(noop_waker_ref());
        Pin::new(r).poll_next(&mut cx)
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_its_payload() {
        // The header alone (and the mask key) is enough: nothing after it is read.
        let mut header = vec![0x82, 0xff];
        header.extend_from_slice(&((1u64 << 63) - 1).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let mut r = reader(vec![header, vec![b'A'; 1 << 20]], 65_536);
        assert!(matches!(
            poll(&mut r),
            Poll::Ready(Some(Err(ReadError::TooBig)))
        ));
        assert_eq!(
            r.input.chunks.len(),
            1,
            "the payload that followed was not read"
        );
        assert!(matches!(poll(&mut r), Poll::Ready(None)));
        // Also when the 64-bit length's top bit is set, and for 126-form lengths.
        let mut header = vec![0x81, 0xff];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            poll(&mut reader(vec![header], 65_536)),
            Poll::Ready(Some(Err(ReadError::TooBig)))
        ));
        let continuation = frame(0x00, &[b'x'; 2000])[..4].to_vec();
        assert!(matches!(
            poll(&mut reader(vec![continuation], 1024)),
            Poll::Ready(Some(Err(ReadError::TooBig)))
        ));
    }

    #[test]
    fn a_control_frame_over_125_bytes_is_refused_at_its_header() {
        let ping = frame(0x89, &[0u8; 126]);
        let mut r = reader(vec![ping[..4].to_vec()], 65_536);
        assert!(matches!(
            poll(&mut r),
            Poll::Ready(Some(Err(ReadError::Protocol(
                ProtocolError::InvalidLength(126)
            ))))
        ));
    }

    #[test]
    fn a_legal_message_trickled_byte_by_byte_buffers_no_more_than_itself() {
        let payload = vec![b'a'; 65_536];
        let bytes = frame(0x81, &payload);
        let total = bytes.len();
        let bytes = bytes.into_iter().map(|b| vec![b]).collect();
        let mut r = FrameReader::new(chunks(bytes, true), 65_536);
        let mut most = 0;
        let got = loop {
            match poll(&mut r) {
                Poll::Ready(Some(Ok(m))) => break m,
                Poll::Ready(other) => panic!("{other:?}"),
                Poll::Pending => most = most.max(r.buffered()),
            }
        };
        assert!(matches!(got, Message::Text(t) if t.len() == 65_536));
        assert!(
            most < total && most > total - 8,
            "at most {most} of {total} bytes"
        );
        // The frame was handed on whole; nothing is kept, nor its capacity.
        assert_eq!(r.buffered(), 0);
        assert!(r.buf.capacity() <= KEEP_EMPTY_BUFFER);
    }

    #[test]
    fn frames_are_read_one_at_a_time_and_invalid_utf8_is_typed() {
        let mut both = frame(0x81, b"hi");
        both.extend(frame(0x81, &[0xff, 0xfe]));
        let mut r = reader(vec![both], 1024);
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Ok(Message::Text(t)))) if t == "hi"));
        assert!(matches!(
            poll(&mut r),
            Poll::Ready(Some(Err(ReadError::InvalidUtf8)))
        ));
        assert!(matches!(poll(&mut r), Poll::Ready(None)));
        // A frame cut short waits for the rest.
        let ping = frame(0x89, b"abc");
        let mut r = reader(vec![ping[..3].to_vec()], 1024);
        assert!(poll(&mut r).is_pending());
    }
}
