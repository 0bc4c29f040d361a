//! Async client of Firecracker's API over its Unix socket.
//!
//! One HTTP/1.1 connection per request (hyper's low-level `client::conn::http1` over a
//! `tokio::net::UnixStream`): the API is low-traffic and sequential, and a fresh connection
//! never trips over a half-closed keep-alive. Every request has a deadline. A non-2xx answer
//! becomes [`ApiError`] carrying the method, path, HTTP status and Firecracker's
//! `fault_message`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::models::{
    ActionType, ApiErrorBody, BootSource, Drive, EntropyDevice, FirecrackerVersion,
    FullVmConfiguration, InstanceActionInfo, InstanceInfo, Logger, MachineConfiguration, Metrics,
    NetworkInterface, PartialDrive, PartialNetworkInterface, SerialDevice, SnapshotCreateParams,
    SnapshotLoadParams, Vm, VmState, Vsock,
};

/// Default deadline of one request. Snapshot requests get [`SNAPSHOT_TIMEOUT`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of snapshot create/load (a 256 MiB full snapshot took 0.79 s on a build machine;
/// large guests on slow disks take much longer).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response body read (Firecracker's answers are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// A non-2xx answer from Firecracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP method of the request.
    pub method: String,
    /// Path of the request.
    pub path: String,
    /// HTTP status Firecracker answered.
    pub status: u16,
    /// Firecracker's `fault_message`, or the raw body when it was not the documented JSON.
    pub fault_message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed ({}): {}",
            self.method, self.path, self.status, self.fault_message
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Whether Firecracker could not open `/dev/net/tun` for lack of permission: the jail is
    /// on a `nodev` mount, or the TAP does not belong to the jail's uid/gid.
    #[must_use]
    pub fn is_tun_permission_denied(&self) -> bool {
        is_tun_permission_denied(&self.fault_message)
    }
}

/// Whether a Firecracker fault message says it could not open `/dev/net/tun` for lack of
/// permission (the host library turns it into advice: jail on a `nodev` mount, TAP owner).
#[must_use]
pub fn is_tun_permission_denied(fault_message: &str) -> bool {
    fault_message.contains("/dev/net/tun")
        && (fault_message.contains("Permission denied")
            || fault_message.contains("Operation not permitted"))
}

/// Everything that can go wrong talking to Firecracker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API socket could not be connected.
    #[error("connecting to the Firecracker API socket {}: {source}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// No complete answer before the deadline.
    #[error("{method} {path}: no answer from Firecracker within {timeout:?}")]
    Timeout {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The HTTP exchange broke (connection closed, malformed answer).
    #[error("{method} {path}: HTTP exchange with Firecracker failed: {source}")]
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Cause.
        source: hyper::Error,
    },
    /// Firecracker answered with an error status.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A request body could not be encoded.
    #[error("{method} {path}: cannot encode the request body: {source}")]
    Encode {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A success body could not be decoded.
    #[error("{method} {path}: cannot decode Firecracker's answer: {source}")]
    Decode {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A response body was larger than the client accepts.
    #[error("{method} {path}: answer larger than {MAX_BODY} bytes")]
    BodyTooLarge {
        /// Method.
        method: String,
        /// Path.
        path: String,
    },
    /// An argument was refused before any request was made.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

impl ClientError {
    /// The Firecracker API error, when this is one.
    #[must_use]
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// Client of one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl FirecrackerClient {
    /// A client of the API socket at `socket` (as seen from the host), with
    /// [`DEFAULT_TIMEOUT`] per request.
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the deadline of each request (snapshot requests use the longer of this and
    /// [`SNAPSHOT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ClientError> {
        self.get_json("/").await
    }

    /// `GET /version`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn version(&self) -> Result<FirecrackerVersion, ClientError> {
        self.get_json("/version").await
    }

    /// `GET /vm/config`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn vm_config(&self) -> Result<FullVmConfiguration, ClientError> {
        self.get_json("/vm/config").await
    }

    /// `GET /machine-config`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn machine_config(&self) -> Result<MachineConfiguration, ClientError> {
        self.get_json("/machine-config").await
    }

    /// `PUT /logger`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_logger(&self, logger: &Logger) -> Result<(), ClientError> {
        self.send(Method::PUT, "/logger", logger, self.timeout)
            .await
    }

    /// `PUT /metrics`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), ClientError> {
        self.send(Method::PUT, "/metrics", metrics, self.timeout)
            .await
    }

    /// `PUT /boot-source`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), ClientError> {
        self.send(Method::PUT, "/boot-source", boot, self.timeout)
            .await
    }

    /// `PUT /drives/{drive_id}`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an id that is not `[A-Za-z0-9_-]{1,64}`, else see
    /// [`ClientError`].
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ClientError> {
        let path = format!("/drives/{}", checked_id("drive_id", &drive.drive_id)?);
        self.send(Method::PUT, &path, drive, self.timeout).await
    }

    /// `PATCH /drives/{drive_id}` (post-boot).
    ///
    /// # Errors
    /// As [`Self::put_drive`].
    pub async fn patch_drive(&self, drive: &PartialDrive) -> Result<(), ClientError> {
        let path = format!("/drives/{}", checked_id("drive_id", &drive.drive_id)?);
        self.send(Method::PATCH, &path, drive, self.timeout).await
    }

    /// `PUT /machine-config`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_machine_config(
        &self,
        config: &MachineConfiguration,
    ) -> Result<(), ClientError> {
        self.send(Method::PUT, "/machine-config", config, self.timeout)
            .await
    }

    /// `PUT /cpu-config`: a custom CPU template (pre-boot only).
    ///
    /// # Errors
    /// As [`Self::put_drive`].
    pub async fn put_cpu_config(
        &self,
        template: &crate::cpu_template::CustomCpuTemplate,
    ) -> Result<(), ClientError> {
        self.send(Method::PUT, "/cpu-config", template, self.timeout)
            .await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    ///
    /// # Errors
    /// As [`Self::put_drive`].
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), ClientError> {
        let path = format!(
            "/network-interfaces/{}",
            checked_id("iface_id", &iface.iface_id)?
        );
        self.send(Method::PUT, &path, iface, self.timeout).await
    }

    /// `PATCH /network-interfaces/{iface_id}` (post-boot rate limiter update).
    ///
    /// # Errors
    /// As [`Self::put_drive`].
    pub async fn patch_network_interface(
        &self,
        iface: &PartialNetworkInterface,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/network-interfaces/{}",
            checked_id("iface_id", &iface.iface_id)?
        );
        self.send(Method::PATCH, &path, iface, self.timeout).await
    }

    /// `PUT /vsock`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ClientError> {
        self.send(Method::PUT, "/vsock", vsock, self.timeout).await
    }

    /// `PUT /entropy`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_entropy(&self, entropy: &EntropyDevice) -> Result<(), ClientError> {
        self.send(Method::PUT, "/entropy", entropy, self.timeout)
            .await
    }

    /// `PUT /serial`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn put_serial(&self, serial: &SerialDevice) -> Result<(), ClientError> {
        self.send(Method::PUT, "/serial", serial, self.timeout)
            .await
    }

    /// `PUT /actions`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn action(&self, action_type: ActionType) -> Result<(), ClientError> {
        self.send(
            Method::PUT,
            "/actions",
            &InstanceActionInfo { action_type },
            self.timeout,
        )
        .await
    }

    /// `PUT /actions` `InstanceStart`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn instance_start(&self) -> Result<(), ClientError> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PUT /actions` `SendCtrlAltDel`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn send_ctrl_alt_del(&self) -> Result<(), ClientError> {
        self.action(ActionType::SendCtrlAltDel).await
    }

    /// `PUT /actions` `FlushMetrics`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn flush_metrics(&self) -> Result<(), ClientError> {
        self.action(ActionType::FlushMetrics).await
    }

    /// `PATCH /vm`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn set_vm_state(&self, state: VmState) -> Result<(), ClientError> {
        self.send(Method::PATCH, "/vm", &Vm { state }, self.timeout)
            .await
    }

    /// `PATCH /vm` `Paused`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn pause(&self) -> Result<(), ClientError> {
        self.set_vm_state(VmState::Paused).await
    }

    /// `PATCH /vm` `Resumed`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn resume(&self) -> Result<(), ClientError> {
        self.set_vm_state(VmState::Resumed).await
    }

    /// `PUT /snapshot/create` (the VM must be paused).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<(), ClientError> {
        let timeout = self.timeout.max(SNAPSHOT_TIMEOUT);
        self.send(Method::PUT, "/snapshot/create", params, timeout)
            .await
    }

    /// `PUT /snapshot/load` (fresh process only).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] unless exactly one memory source is given, else see
    /// [`ClientError`].
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<(), ClientError> {
        params
            .validate()
            .map_err(|reason| ClientError::InvalidArgument {
                what: "snapshot load parameters",
                value: params.snapshot_path.clone(),
                reason,
            })?;
        let timeout = self.timeout.max(SNAPSHOT_TIMEOUT);
        self.send(Method::PUT, "/snapshot/load", params, timeout)
            .await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, path, None, self.timeout).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            method: Method::GET.to_string(),
            path: path.to_owned(),
            source,
        })
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let json = serde_json::to_vec(body).map_err(|source| ClientError::Encode {
            method: method.to_string(),
            path: path.to_owned(),
            source,
        })?;
        self.request(method, path, Some(Bytes::from(json)), timeout)
            .await
            .map(drop)
    }

    /// Sends one request on a fresh connection and returns the body of a 2xx answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let method_name = method.to_string();
        match tokio::time::timeout(timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                method: method_name,
                path: path.to_owned(),
                timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, ClientError> {
        let http_err = |source| ClientError::Http {
            method: method.to_string(),
            path: path.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let has_body = body.is_some();
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if has_body {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| ClientError::InvalidArgument {
                what: "request path",
                value: path.to_owned(),
                reason: "not a valid HTTP request target",
            })?;

        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // The connection is driven in this task, next to the exchange (no spawned task, so
        // nothing outlives a request that timed out and is dropped).
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(Exchange::Http)?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(source) => Exchange::Http(*source),
                    Err(_) => Exchange::TooLarge,
                })?
                .to_bytes();
            // Dropping the sender lets the connection future finish.
            drop(sender);
            Ok::<_, Exchange>((status, body))
        };
        let mut exchange = std::pin::pin!(exchange);
        let mut conn = std::pin::pin!(conn);
        let outcome = tokio::select! {
            outcome = &mut exchange => outcome,
            ended = &mut conn => {
                // The connection ended first: the exchange now completes (with the answer
                // already read, or with an error); prefer the connection's own error.
                let outcome = exchange.await;
                match (ended, outcome) {
                    (Err(e), Err(_)) => Err(Exchange::Http(e)),
                    (_, outcome) => outcome,
                }
            }
        };
        let (status, collected) = outcome.map_err(|e| match e {
            Exchange::Http(source) => http_err(source),
            Exchange::TooLarge => ClientError::BodyTooLarge {
                method: method.to_string(),
                path: path.to_owned(),
            },
        })?;

        if status.is_success() {
            Ok(collected)
        } else {
            Err(ClientError::Api(api_error(
                &method, path, status, &collected,
            )))
        }
    }
}

fn api_error(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let fault_message = match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(ApiErrorBody {
            fault_message: Some(message),
        }) => message,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text.chars().take(4096).collect()
            }
        }
    };
    ApiError {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        fault_message,
    }
}

/// Resource ids that go into a request path: `[A-Za-z0-9_-]{1,64}`.
fn checked_id<'a>(what: &'static str, id: &'a str) -> Result<&'a str, ClientError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ClientError::InvalidArgument {
            what,
            value: id.to_owned(),
            reason: "must be 1 to 64 of [A-Za-z0-9_-]",
        })
    }
}

/// How one exchange failed.
#[derive(Debug)]
enum Exchange {
    Http(hyper::Error),
    TooLarge,
}

/// Why [`wait_for_socket`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed before the socket accepted a connection.
    #[error("the API socket {} did not accept connections within {waited:?} (last error: {last})", path.display())]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
        /// The last connect error.
        last: io::Error,
    },
    /// The caller's liveness check said the process that should create the socket is gone.
    #[error("the process serving {} exited before its API socket accepted connections", path.display())]
    ProcessExited {
        /// Socket path.
        path: PathBuf,
    },
    /// A connect error that waiting cannot cure (permission, path too long, …).
    #[error("cannot connect to the API socket {}: {source}", path.display())]
    Fatal {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Waits until the Unix socket at `path` accepts a connection, polling every 200 µs for the
/// first 10 ms (a VMM binds its socket a millisecond or two after it starts), then with an
/// exponential backoff (1 ms doubling to 20 ms) until `deadline`.
///
/// # Errors
/// [`WaitError`].
pub async fn wait_for_socket(path: &Path, deadline: Instant) -> Result<(), WaitError> {
    wait_for_socket_while(path, deadline, || true).await
}

/// Like [`wait_for_socket`], but gives up with [`WaitError::ProcessExited`] as soon as
/// `still_alive` returns false (e.g. the jailer or Firecracker process has exited).
///
/// # Errors
/// [`WaitError`].
pub async fn wait_for_socket_while(
    path: &Path,
    deadline: Instant,
    mut still_alive: impl FnMut() -> bool,
) -> Result<(), WaitError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(1);
    loop {
        let err = match UnixStream::connect(path).await {
            Ok(stream) => {
                drop(stream);
                return Ok(());
            }
            Err(err) => err,
        };
        let transient = matches!(
            err.raw_os_error(),
            Some(libc::ENOENT | libc::ECONNREFUSED | libc::EAGAIN | libc::ENOTDIR)
        );
        if !transient {
            return Err(WaitError::Fatal {
                path: path.to_owned(),
                source: err,
            });
        }
        if !still_alive() {
            return Err(WaitError::ProcessExited {
                path: path.to_owned(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                path: path.to_owned(),
                waited: now.duration_since(started),
                last: err,
            });
        }
        if now.duration_since(started) < FINE_POLLING {
            fine_sleep(FINE_POLL.min(deadline.saturating_duration_since(now))).await;
            continue;
        }
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(Duration::from_millis(20));
    }
}

/// How long [`wait_for_socket_while`] polls at [`FINE_POLL`].
const FINE_POLLING: Duration = Duration::from_millis(10);
const FINE_POLL: Duration = Duration::from_micros(200);

/// A sleep shorter than the runtime's timer can time (it counts whole milliseconds): on a
/// blocking-pool thread.
async fn fine_sleep(d: Duration) {
    if tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .is_err()
    {
        tokio::time::sleep(d).await;
    }
}
