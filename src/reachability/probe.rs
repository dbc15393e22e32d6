//! One STUN Binding transaction over UDP (RFC 8489 §6.2.1): the request is sent again on the
//! retransmission schedule until an answer with its transaction id arrives; any other datagram
//! (a stray packet, an answer to an earlier transaction, something that is not STUN) is
//! ignored. The answer may come from another address than the request went to: that is the
//! point of RFC 5780's CHANGE-REQUEST.

use std::net::SocketAddr;

use double_natpmp_codec::stun::{
    decode_message, encode_binding_request, ChangeRequest, Class, Message, Retransmission,
    TransactionId,
};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};

/// Why a transaction gave no usable answer.
#[derive(Debug, Error)]
pub(crate) enum ProbeError {
    /// No answer within the schedule.
    #[error("no answer from {server} within {waited:?}")]
    NoAnswer {
        /// The server asked.
        server: SocketAddr,
        /// How long the schedule waited.
        waited: std::time::Duration,
    },
    /// The server answered with an error response.
    #[error("{server} answered error {code}: {reason}")]
    ErrorResponse {
        /// The server asked.
        server: SocketAddr,
        /// The ERROR-CODE.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The socket failed.
    #[error("the probe's socket failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What a Binding Request asks for besides the reflexive address.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ask {
    /// CHANGE-REQUEST: answer from the other IP and/or port.
    pub(crate) change: ChangeRequest,
    /// RESPONSE-PORT: answer to this port at the request's source IP.
    pub(crate) response_port: Option<u16>,
}

/// A fresh transaction id (RFC 8489 §6: uniformly random).
fn transaction_id() -> TransactionId {
    let mut id = [0u8; 12];
    id.iter_mut().for_each(|b| *b = fastrand::u8(..));
    TransactionId(id)
}

/// Sends a Binding Request from `socket` to `server` on `schedule` and returns the success
/// answer and the address it came from.
pub(crate) async fn binding(
    socket: &UdpSocket,
    server: SocketAddr,
    ask: Ask,
    schedule: Retransmission,
) -> Result<(Message, SocketAddr), ProbeError> {
    let id = transaction_id();
    let request = encode_binding_request(id, ask.change, ask.response_port);
    let mut buf = [0u8; 1500];
    for wait in schedule.waits() {
        socket.send_to(&request, server).await?;
        let deadline = Instant::now() + wait;
        loop {
            let (len, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Ok(received) => received?,
                Err(_) => break,
            };
            let Some(answer) = buf.get(..len).and_then(|d| decode_message(d).ok()) else {
                continue;
            };
            if !answer.is_response_to(id) || !answer.unknown_required.is_empty() {
                continue;
            }
            if answer.class == Class::Error {
                let (code, reason) = answer
                    .error_code()
                    .map(|e| (e.code, e.reason.clone()))
                    .unwrap_or((0, String::new()));
                return Err(ProbeError::ErrorResponse {
                    server,
                    code,
                    reason,
                });
            }
            return Ok((answer, from));
        }
    }
    Err(ProbeError::NoAnswer {
        server,
        waited: schedule.total(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::stun::{binding_error, binding_success, encode_message};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    async fn socket() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
    }

    fn quick() -> Retransmission {
        Retransmission {
            rto: Duration::from_millis(50),
            requests: 3,
            last_wait_factor: 2,
        }
    }

    #[tokio::test]
    async fn strays_and_other_transactions_are_ignored_and_the_matching_answer_taken() {
        let client = socket().await;
        let server = socket().await;
        let to = server.local_addr().unwrap();
        let from = client.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (len, peer) = server.recv_from(&mut buf).await.unwrap();
            let request = decode_message(&buf[..len]).unwrap();
            // A stray, then an answer to another transaction, then the real one.
            server.send_to(b"not stun", peer).await.unwrap();
            let other = binding_success(TransactionId([9; 12]), peer, to, None);
            server
                .send_to(&encode_message(&other, true), peer)
                .await
                .unwrap();
            let real = binding_success(request.transaction_id, peer, to, None);
            server
                .send_to(&encode_message(&real, true), peer)
                .await
                .unwrap();
        });
        let (answer, source) = binding(&client, to, Ask::default(), quick()).await.unwrap();
        assert_eq!(answer.xor_mapped_address(), Some(from));
        assert_eq!(source, to);
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_request_is_sent_again_on_the_schedule() {
        let client = socket().await;
        let server = socket().await;
        let to = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // The first request is "lost": read and not answered.
            let (_, _) = server.recv_from(&mut buf).await.unwrap();
            let (len, peer) = server.recv_from(&mut buf).await.unwrap();
            let request = decode_message(&buf[..len]).unwrap();
            let answer = binding_success(request.transaction_id, peer, to, None);
            server
                .send_to(&encode_message(&answer, true), peer)
                .await
                .unwrap();
        });
        assert!(binding(&client, to, Ask::default(), quick()).await.is_ok());
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn an_error_answer_is_an_error_and_silence_is_no_answer() {
        let client = socket().await;
        let server = socket().await;
        let to = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (len, peer) = server.recv_from(&mut buf).await.unwrap();
            let request = decode_message(&buf[..len]).unwrap();
            let answer = binding_error(request.transaction_id, 420, "Unknown Attribute");
            server
                .send_to(&encode_message(&answer, true), peer)
                .await
                .unwrap();
            server
        });
        let ask = Ask {
            change: ChangeRequest::IP_AND_PORT,
            response_port: None,
        };
        match binding(&client, to, ask, quick()).await {
            Err(ProbeError::ErrorResponse { code: 420, .. }) => {}
            other => panic!("{other:?}"),
        }
        let _silent = serve.await.unwrap();
        match binding(&client, to, Ask::default(), quick()).await {
            Err(ProbeError::NoAnswer { waited, .. }) => assert_eq!(waited, quick().total()),
            other => panic!("{other:?}"),
        }
    }
}
