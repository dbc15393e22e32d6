use super::*;
use double_natpmp_codec::routeros::wire::{
    decode_sentence, encode_length, encode_sentence, MAX_WORD_LEN,
};
use tokio::net::TcpListener;

#[test]
fn password_never_shows_in_debug_or_display() {
    let cfg = ApiConfig::new("127.0.0.1:8728", "natpmp", Password::new("s3cret!"));
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(!format!("{:?}", cfg.password).contains("s3cret"));
    assert_eq!(format!("{}", cfg.password), "***");
    assert_eq!(cfg.password.expose(), "s3cret!");
    let connector = Connector::new(cfg).unwrap();
    assert!(!format!("{connector:?} {connector:#?}").contains("s3cret"));
}

/// A fake router that answers the login with `!done` and then, for each command it reads,
/// writes whatever `script` returns for the command's tag.
async fn fake_router<F>(script: F) -> String
where
    F: Fn(&str, &str) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some((words, used)) = decode_sentence(&buf).unwrap() {
                buf.drain(..used);
                let cmd = Command::from_words(&words).unwrap();
                let tag = cmd.tag.clone().unwrap_or_default();
                let out = if cmd.path == "/login" {
                    let mut o = Vec::new();
                    encode_sentence(&["!done".to_owned(), format!(".tag={tag}")], &mut o);
                    o
                } else {
                    script(&cmd.path, &tag)
                };
                if sock.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    });
    addr
}

fn sentence(words: &[String]) -> Vec<u8> {
    let mut o = Vec::new();
    encode_sentence(words, &mut o);
    o
}

async fn connect(addr: String) -> Connection {
    let mut cfg = ApiConfig::new(addr, "u", Password::new("p"));
    cfg.command_timeout = Duration::from_millis(500);
    Connector::new(cfg).unwrap().connect().await.unwrap()
}

#[tokio::test]
async fn reads_replies_with_tag_last_and_skips_empty_sentences() {
    let addr = fake_router(|_, tag| {
        let mut o = vec![0u8]; // an empty sentence first
        o.extend(sentence(&[
            "!re".into(),
            "=name=a=b".into(),
            format!(".tag={tag}"),
        ]));
        o.extend(sentence(&[
            "!done".into(),
            "=ret=*1F".into(),
            format!(".tag={tag}"),
        ]));
        o
    })
    .await;
    let mut conn = connect(addr).await;
    let resp = conn.run(Command::new("/x/print")).await.unwrap();
    assert_eq!(resp.rows.len(), 1);
    assert_eq!(resp.rows[0].get("name"), Some("a=b"));
    assert_eq!(resp.ret(), Some("*1F"));
    assert!(!conn.is_broken());
    // The connection stays in step for a second command.
    let resp = conn.run(Command::new("/x/print")).await.unwrap();
    assert_eq!(resp.ret(), Some("*1F"));
}

#[tokio::test]
async fn trap_then_done_is_collected_and_connection_stays_usable() {
    let addr = fake_router(|_, tag| {
        let mut o = sentence(&[
            "!trap".into(),
            format!(".tag={tag}"),
            "=message=no such item (4)".into(),
        ]);
        o.extend(sentence(&["!done".into(), format!(".tag={tag}")]));
        o
    })
    .await;
    let mut conn = connect(addr).await;
    let resp = conn.run(Command::new("/x/remove")).await.unwrap();
    assert_eq!(resp.traps.len(), 1);
    assert_eq!(resp.traps[0].get("message"), Some("no such item (4)"));
    assert!(!conn.is_broken());
}

#[tokio::test]
async fn empty_reply_is_seen_before_done() {
    let addr = fake_router(|_, tag| {
        let mut o = sentence(&["!empty".into(), format!(".tag={tag}")]);
        o.extend(sentence(&["!done".into(), format!(".tag={tag}")]));
        o
    })
    .await;
    let mut conn = connect(addr).await;
    let resp = conn.run(Command::new("/x/print")).await.unwrap();
    assert!(resp.empty);
    assert!(resp.rows.is_empty());
}

#[tokio::test]
async fn bare_word_fatal_is_a_fatal_error_with_its_reason_and_poisons() {
    let addr = fake_router(|_, _| sentence(&["!fatal".into(), "not logged in".into()])).await;
    let mut conn = connect(addr).await;
    let err = conn.run(Command::new("/x/print")).await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Fatal { reason, .. } if reason == "not logged in"),
        "{err:?}"
    );
    assert!(conn.is_broken());
}

#[tokio::test]
async fn foreign_tag_poisons_the_connection() {
    let addr = fake_router(|_, _| sentence(&["!done".into(), ".tag=999".into()])).await;
    let mut conn = connect(addr).await;
    let err = conn.run(Command::new("/x/print")).await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
    assert!(conn.is_broken());
}

#[tokio::test]
async fn unknown_reply_word_poisons_the_connection() {
    let addr = fake_router(|_, tag| sentence(&["!weird".into(), format!(".tag={tag}")])).await;
    let mut conn = connect(addr).await;
    let err = conn.run(Command::new("/x/print")).await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
    assert!(conn.is_broken());
}

#[tokio::test]
async fn reply_sentence_over_the_size_cap_is_an_error_before_its_bytes_arrive_and_poisons() {
    // One word of the largest size, then the prefix of a second one as long: together past the
    // sentence cap. The second word's bytes never come, so only the cap (not a timeout or the
    // end of the data) can end the read.
    let addr = fake_router(|_, tag| {
        let mut o = Vec::new();
        for w in ["!re".to_owned(), format!(".tag={tag}")] {
            double_natpmp_codec::routeros::wire::encode_word(w.as_bytes(), &mut o);
        }
        encode_length(MAX_WORD_LEN, &mut o);
        o.resize(o.len() + MAX_WORD_LEN, b'a');
        encode_length(MAX_WORD_LEN, &mut o);
        o
    })
    .await;
    let mut conn = connect(addr).await;
    let err = conn.run(Command::new("/x/print")).await.unwrap_err();
    assert!(matches!(err, RouterError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("byte limit"), "{err}");
    assert!(conn.is_broken());
}

#[tokio::test]
async fn silent_router_gives_timeout_within_command_timeout() {
    let addr = fake_router(|_, _| Vec::new()).await;
    let mut conn = connect(addr).await;
    let started = std::time::Instant::now();
    let err = conn.run(Command::new("/x/print")).await.unwrap_err();
    assert!(matches!(err, RouterError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(conn.is_broken());
}

#[tokio::test]
async fn dropped_command_future_poisons_the_connection() {
    let addr = fake_router(|_, _| Vec::new()).await;
    let mut conn = connect(addr).await;
    {
        let fut = conn.run(Command::new("/x/print"));
        let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
    }
    assert!(conn.is_broken());
}

/// A fake router that answers the first sentence it reads (the login) with `reply`.
async fn answer_login_with(reply: fn(&str) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((words, _)) = decode_sentence(&buf).unwrap() {
                let tag = Command::from_words(&words).unwrap().tag.unwrap_or_default();
                let _ = sock.write_all(&reply(&tag)).await;
                return;
            }
        }
    });
    addr
}

#[tokio::test]
async fn fatal_in_answer_to_the_login_is_a_refused_login() {
    let addr =
        answer_login_with(|_| sentence(&["!fatal".into(), "too many sessions".into()])).await;
    let cfg = ApiConfig::new(addr, "u", Password::new("p"));
    let err = Connector::new(cfg).unwrap().connect().await.unwrap_err();
    assert!(
        matches!(&err, RouterError::LoginRefused { message, .. } if message.contains("too many sessions")),
        "{err:?}"
    );
}

#[tokio::test]
async fn challenge_login_is_refused_with_a_clear_message() {
    let addr = answer_login_with(|tag| {
        sentence(&[
            "!done".into(),
            "=ret=0123456789abcdef0123456789abcdef".into(),
            format!(".tag={tag}"),
        ])
    })
    .await;
    let cfg = ApiConfig::new(addr, "u", Password::new("p"));
    let err = Connector::new(cfg).unwrap().connect().await.unwrap_err();
    assert!(
        matches!(&err, RouterError::LoginRefused { message, .. } if message.contains("6.43")),
        "{err}"
    );
}
