//! TCP proxies in front of a database: one that loses the answer to a COMMIT, one that holds
//! the messages that hold a pattern.

/// The simple query `COMMIT` as PostgreSQL's protocol sends it (not `ON COMMIT DROP`, say).
pub const PG_COMMIT: &[u8] = b"COMMIT\0";
/// `COMMIT` as MariaDB's and MySQL's protocol sends it: a COM_QUERY packet of 7 bytes.
pub const MYSQL_COMMIT: &[u8] = b"\x07\x00\x00\x00\x03COMMIT";

/// A TCP proxy to a database that, once armed, passes one COMMIT (`commit`, as the
/// database's protocol sends it) on and then cuts the connection before the answer comes
/// back: a COMMIT whose outcome the client never hears (it went through).
pub struct CommitCutter {
    pub addr: std::net::SocketAddr,
    pub armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CommitCutter {
    pub async fn start(target: u16) -> CommitCutter {
        CommitCutter::start_for(target, PG_COMMIT).await
    }

    pub async fn start_for(target: u16, commit: &'static [u8]) -> CommitCutter {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = std::sync::Arc::new(AtomicBool::new(false));
        let cuts = std::sync::Arc::new(AtomicUsize::new(0));
        let (armed_, cuts_) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let cut = std::sync::Arc::new(AtomicBool::new(false));
                let (armed, cuts, cut_up) = (armed_.clone(), cuts_.clone(), cut.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let committing = buf[..n].windows(commit.len()).any(|w| w == commit);
                        if committing && armed.swap(false, Ordering::SeqCst) {
                            cut_up.store(true, Ordering::SeqCst);
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = server_tx.write_all(&buf[..n]).await;
                            // The database commits; its answer is dropped on the way back.
                            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                            break;
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_rx.read(&mut buf).await {
                        if n == 0 || cut.load(Ordering::SeqCst) {
                            break;
                        }
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CommitCutter { addr, armed, cuts }
    }
}

/// A TCP proxy in front of PostgreSQL that holds, while it is told to, every message from
/// the client that holds `pattern` (`pg_catalog.pg_attribute`: the schema gate's catalog
/// read), and passes everything else through.
pub struct HoldProxy {
    pub port: u16,
    pub hold: tokio::sync::watch::Sender<bool>,
    pub held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HoldProxy {
    pub async fn start(target: u16, pattern: &'static [u8]) -> HoldProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hold, holding) = tokio::sync::watch::channel(false);
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let (mut holding, counted) = (holding.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let matched = buf[..n].windows(pattern.len()).any(|w| w == pattern);
                        if matched && *holding.borrow() {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = holding.wait_for(|hold| !hold).await;
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
            }
        });
        HoldProxy { port, hold, held }
    }
}
