//! TLS for the gRPC server (rustls): the certificate and key it presents,
//! and, for mutual TLS, the CA its clients' certificates must chain to.
//! The files are re-read on demand (SIGHUP): each new connection is served
//! with the configuration last loaded, connections already open keep
//! theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// How long a client gets to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the gRPC server's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain the server presents.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must present a
    /// certificate that chains to one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why TLS material was refused.
#[derive(Debug, Error)]
#[error("{}: {why}", path.display())]
pub struct TlsError {
    /// The file at fault (or the certificate, for a mismatch).
    pub path: PathBuf,
    /// What is wrong.
    pub why: String,
}

/// The gRPC server's TLS configuration, replaceable while it serves.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Reads the files; an error names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let config = build(&files)?;
        Ok(ServerTls {
            files,
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.store(Arc::new(build(&self.files)?));
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Runs the server side of a handshake on `stream` with the
    /// configuration in use now.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config.load_full());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

fn refused(path: &Path, why: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(path, e))?;
    if certs.is_empty() {
        return Err(refused(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| refused(&files.key, e))?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| refused(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| refused(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        refused(
            &files.cert,
            format!("with key {}: {e}", files.key.display()),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
