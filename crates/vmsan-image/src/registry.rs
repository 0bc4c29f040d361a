//! A client of the OCI distribution (registry v2) protocol: anonymous access, the bearer-token
//! flow, basic auth with credentials from the Docker config file, manifest and blob fetches.
//! Blobs are verified (size and sha256) while they stream to disk, and interrupted downloads
//! resume with a `Range` request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    MAX_DOCUMENT_BYTES, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST,
};
use crate::progress::{Progress, ProgressFn, emit};
use crate::reference::{DOCKER_HUB, Reference};
use crate::store::ImageStore;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The Docker config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Look up credentials for `registry` in a Docker config file: first its credential helper
/// (`credHelpers` for this registry, else `credsStore`), run as `docker-credential-NAME get`
/// with the server on standard input; then `auths` entries (`auth`, or `username` and
/// `password`). A missing or unreadable config file, or a helper that is not installed or
/// has no credentials for this registry, gives `Ok(None)`.
///
/// # Errors
/// [`Error::Auth`] when a configured helper fails, answers garbage or does not answer.
pub fn docker_credentials(config: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Ok(bytes) = std::fs::read(config) else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        tracing::warn!(config = %config.display(), "Docker config file is not JSON; ignored");
        return Ok(None);
    };
    let mut keys = vec![
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == DOCKER_HUB {
        keys.extend(
            [
                "https://index.docker.io/v1/",
                "index.docker.io",
                "registry-1.docker.io",
            ]
            .map(str::to_owned),
        );
    }
    let helper = keys
        .iter()
        .find_map(|k| v.get("credHelpers")?.get(k)?.as_str())
        .or_else(|| v.get("credsStore")?.as_str())
        .filter(|h| !h.is_empty());
    if let Some(h) = helper {
        let server = if registry == DOCKER_HUB {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        if let Some(c) = run_credential_helper(h, server, registry)? {
            return Ok(Some(c));
        }
    }
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some(entry) = keys
        .iter()
        .find_map(|k| auths.get(k).or_else(|| auths.get(&format!("{k}/"))))
    else {
        return Ok(None);
    };
    if let Some(a) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a)
            .ok()
            .and_then(|d| String::from_utf8(d).ok());
        let Some((u, p)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
            return Err(Error::Auth {
                registry: registry.to_owned(),
                reason: format!(
                    "the `auth` entry in {} is not base64 of user:password",
                    config.display()
                ),
            });
        };
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    let u = entry.get("username").and_then(|u| u.as_str());
    let p = entry.get("password").and_then(|p| p.as_str());
    Ok(u.zip(p).map(|(u, p)| Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    }))
}

/// Run `docker-credential-NAME get` (no shell), the server name on its standard input; parse
/// its `{"Username": …, "Secret": …}` answer.
fn run_credential_helper(name: &str, server: &str, registry: &str) -> Result<Option<Credentials>> {
    let auth_err = |reason: String| Error::Auth {
        registry: registry.to_owned(),
        reason,
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(auth_err(format!(
            "invalid credential helper name {name:?} in the Docker config"
        )));
    }
    let program = format!("docker-credential-{name}");
    let mut child = match std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(helper = %program, "credential helper named in the Docker config is not installed; pulling without its credentials");
            return Ok(None);
        }
        Err(e) => return Err(Error::io(format!("run {program}"), e)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = server.to_owned();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let res = (|| -> std::io::Result<(Vec<u8>, Vec<u8>)> {
            if let Some(mut i) = stdin {
                i.write_all(input.as_bytes())?;
            }
            let mut out = Vec::new();
            if let Some(mut o) = stdout {
                o.read_to_end(&mut out)?;
            }
            let mut err = Vec::new();
            if let Some(mut e) = stderr {
                e.read_to_end(&mut err)?;
            }
            Ok((out, err))
        })();
        let _ = tx.send(res);
    });
    let (out, err) = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io(format!("talk to {program}"), e));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(auth_err(format!(
                "{program} did not answer within {} s",
                HELPER_TIMEOUT.as_secs()
            )));
        }
    };
    let status = child.wait().ctx(|| format!("wait for {program}"))?;
    if !status.success() {
        let msg = String::from_utf8_lossy(if out.is_empty() { &err } else { &out })
            .trim()
            .chars()
            .take(300)
            .collect::<String>();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(auth_err(format!("{program} get failed ({status}): {msg}")));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out).map_err(|e| {
        auth_err(format!(
            "{program} answered something that is not its JSON: {e}"
        ))
    })?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

/// What a blob download sends to a reader that unpacks the layer while it arrives.
#[derive(Debug)]
pub(crate) enum Feed {
    /// The next bytes of the blob.
    Data(bytes::Bytes),
    /// All bytes were sent, and they hash to the blob's digest.
    End,
    /// The download starts over: read the stored blob once it is there.
    Restart,
}

pub(crate) type FeedSender = tokio::sync::mpsc::Sender<Feed>;

fn is_loopback_host(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        domain.rsplit_once(':').map_or(domain, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connection to one repository of one registry.
#[derive(Debug)]
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: String,
    registry: String,
    repo: String,
    creds: Option<Credentials>,
    auth: Mutex<Option<HeaderValue>>,
}

fn http_err(url: &str, e: reqwest::Error) -> Error {
    Error::Http {
        url: url.to_owned(),
        source: e,
    }
}

impl RegistryClient {
    pub(crate) fn new(
        r: &Reference,
        plain_http: &[String],
        creds: Option<Credentials>,
    ) -> Result<Self> {
        let domain = r.domain();
        let host = if domain == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            domain
        };
        let scheme = if is_loopback_host(domain) || plain_http.iter().any(|h| h == domain) {
            "http"
        } else {
            "https"
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("vmsan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| http_err(host, e))?;
        Ok(Self {
            http,
            base: format!("{scheme}://{host}"),
            registry: domain.to_owned(),
            repo: r.path().to_owned(),
            creds,
            auth: Mutex::new(None),
        })
    }

    fn basic(&self) -> Option<HeaderValue> {
        self.creds.as_ref().and_then(|c| {
            let enc = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            HeaderValue::from_str(&format!("Basic {enc}")).ok()
        })
    }

    /// Send a request, answering one authentication challenge if there is one.
    async fn send(
        &self,
        method: Method,
        url: &str,
        extra: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in extra {
                req = req.header(k, v);
            }
            if let Some(a) = self.auth.lock().await.clone() {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| http_err(url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(Error::Auth {
                        registry: self.registry.clone(),
                        reason: if self.creds.is_some() {
                            "credentials were refused".into()
                        } else {
                            "the registry requires credentials".into()
                        },
                    });
                }
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default();
            let header = self.answer_challenge(&challenge).await?;
            *self.auth.lock().await = Some(header);
        }
        Err(Error::Auth {
            registry: self.registry.clone(),
            reason: "authentication loop".into(),
        })
    }

    async fn answer_challenge(&self, challenge: &str) -> Result<HeaderValue> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self.basic().ok_or_else(|| Error::Auth {
                registry: self.registry.clone(),
                reason: "the registry requires credentials (basic auth)".into(),
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Auth {
                registry: self.registry.clone(),
                reason: format!("unsupported challenge {challenge:?}"),
            });
        }
        let params = parse_challenge_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm").ok_or_else(|| Error::Auth {
            registry: self.registry.clone(),
            reason: "bearer challenge without realm".into(),
        })?;
        let mut url = reqwest::Url::parse(&realm).map_err(|e| Error::Auth {
            registry: self.registry.clone(),
            reason: format!("bad token realm {realm:?}: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = get("service") {
                q.append_pair("service", &s);
            }
            q.append_pair(
                "scope",
                &get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repo)),
            );
        }
        let mut req = self.http.get(url.clone());
        if let Some(b) = self.basic() {
            req = req.header(AUTHORIZATION, b);
        }
        let resp = req.send().await.map_err(|e| http_err(url.as_str(), e))?;
        if !resp.status().is_success() {
            return Err(Error::Auth {
                registry: self.registry.clone(),
                reason: format!("token endpoint {} answered {}", url.as_str(), resp.status()),
            });
        }
        let body = resp.bytes().await.map_err(|e| http_err(url.as_str(), e))?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Auth {
            registry: self.registry.clone(),
            reason: format!("token response is not JSON: {e}"),
        })?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Auth {
                registry: self.registry.clone(),
                reason: "token response without a token".into(),
            })?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Auth {
            registry: self.registry.clone(),
            reason: "token has invalid characters".into(),
        })
    }

    async fn status_error(url: &str, resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Error::Status {
            url: url.to_owned(),
            status,
            body,
        }
    }

    /// GET a manifest by tag or digest; returns its bytes, content type and digest (verified
    /// when `reference` is a digest).
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        display: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repo, reference);
        let resp = self
            .send(Method::GET, &url, &[(ACCEPT, MANIFEST_ACCEPT.to_owned())])
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(display.to_owned(), " in the registry"));
        }
        if !resp.status().is_success() {
            return Err(Self::status_error(&url, resp).await);
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
        let bytes = read_limited(resp, MAX_DOCUMENT_BYTES, &url).await?;
        let actual = Digest::of(&bytes);
        if reference.starts_with("sha256:") {
            let want = Digest::parse(reference)?;
            if want != actual {
                return Err(Error::DigestMismatch {
                    what: format!("manifest of {display}"),
                    expected: want.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        if let Some(ct) = &ct
            && ![
                MT_OCI_MANIFEST,
                MT_OCI_INDEX,
                MT_DOCKER_MANIFEST,
                MT_DOCKER_LIST,
                "application/json",
            ]
            .contains(&ct.as_str())
        {
            return Err(Error::malformed(
                format!("manifest of {display}"),
                format!("unsupported media type {ct:?}"),
            ));
        }
        Ok((bytes, ct, actual))
    }

    /// Fetch a small blob (config) into memory, verified.
    pub(crate) async fn small_blob(&self, d: &Digest, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_DOCUMENT_BYTES as u64 {
            return Err(Error::LimitExceeded {
                what: what.to_owned(),
                reason: "larger than 4 MiB".into(),
            });
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, d);
        let resp = self.send(Method::GET, &url, &[]).await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(&url, resp).await);
        }
        let bytes = read_limited(resp, MAX_DOCUMENT_BYTES, &url).await?;
        if bytes.len() as u64 != size {
            return Err(Error::SizeMismatch {
                what: what.to_owned(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        d.verify(what, &bytes)?;
        Ok(bytes)
    }

    /// Download a blob into the store (resuming a partial download), verified.
    /// Returns whether it was already cached.
    ///
    /// With `feed`, the bytes of a fresh (not resumed) download are also sent there as they
    /// arrive, then [`Feed::End`] once the blob is verified and stored. When they cannot be
    /// (cached, downloaded by another process, resumed, retried), the feed gets
    /// [`Feed::Restart`] or is dropped: its reader then uses the stored blob.
    pub(crate) async fn blob_to_store(
        &self,
        store: &ImageStore,
        d: &Digest,
        size: u64,
        progress: Option<&ProgressFn>,
        retries: u32,
        mut feed: Option<FeedSender>,
    ) -> Result<bool> {
        let dest = store.blob_path(d);
        if dest.is_file() {
            emit(
                progress,
                Progress::LayerDone {
                    digest: d.clone(),
                    cached: true,
                },
            );
            return Ok(true);
        }
        // One downloader per blob across processes: the others wait, then find it cached.
        let _lock = store.blob_lock(d).await?;
        if dest.is_file() {
            emit(
                progress,
                Progress::LayerDone {
                    digest: d.clone(),
                    cached: true,
                },
            );
            return Ok(true);
        }
        let partial = store.partial_path(d);
        if partial.exists() {
            // Resuming: the reader could not see the first part; it will use the stored blob.
            feed = None;
        }
        let mut attempt = 0;
        loop {
            match self
                .try_blob(&partial, d, size, progress, feed.as_ref())
                .await
            {
                Ok(()) => break,
                Err(e @ (Error::Http { .. } | Error::SizeMismatch { .. })) if attempt < retries => {
                    tracing::warn!(error = %e, digest = %d, "blob download interrupted; resuming");
                    attempt += 1;
                    if let Some(f) = feed.take() {
                        let _ = f.send(Feed::Restart).await;
                    }
                }
                Err(e) => {
                    // Nothing half-written stays behind after a definitive failure.
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            }
        }
        std::fs::rename(&partial, &dest)
            .ctx(|| format!("rename {} into the blob store", partial.display()))?;
        emit(
            progress,
            Progress::LayerDone {
                digest: d.clone(),
                cached: false,
            },
        );
        Ok(false)
    }

    async fn try_blob(
        &self,
        partial: &Path,
        d: &Digest,
        size: u64,
        progress: Option<&ProgressFn>,
        feed: Option<&FeedSender>,
    ) -> Result<()> {
        let what = format!("blob {d}");
        // Re-hash what an earlier attempt left.
        let (mut hasher, mut offset) = match std::fs::File::open(partial) {
            Ok(mut f) => {
                let mut h = Hasher::default();
                let mut buf = vec![0u8; 1 << 20];
                let mut n_total = 0u64;
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf)
                        .ctx(|| format!("read {}", partial.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    n_total += n as u64;
                }
                (h, n_total)
            }
            Err(_) => (Hasher::default(), 0),
        };
        if offset > size {
            let _ = std::fs::remove_file(partial);
            hasher = Hasher::default();
            offset = 0;
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, d);
        let mut extra = Vec::new();
        if offset > 0 && offset < size {
            extra.push((RANGE, format!("bytes={offset}-")));
        }
        let mut resp = if offset == size && size > 0 {
            None
        } else {
            let resp = self.send(Method::GET, &url, &extra).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(Error::NotFound(what, " in the registry"));
            }
            if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                // The server has less than we already hold: start over next time.
                let _ = std::fs::remove_file(partial);
                return Err(Error::SizeMismatch {
                    what,
                    expected: size,
                    actual: offset,
                });
            }
            if !resp.status().is_success() {
                return Err(Self::status_error(&url, resp).await);
            }
            Some(resp)
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .await
            .ctx(|| format!("open {}", partial.display()))?;
        if let Some(r) = &resp
            && r.status() != StatusCode::PARTIAL_CONTENT
            && offset > 0
        {
            // The server ignored the range: start over.
            file.set_len(0)
                .await
                .ctx(|| format!("truncate {}", partial.display()))?;
            hasher = Hasher::default();
            offset = 0;
        }
        emit(
            progress,
            Progress::LayerStart {
                digest: d.clone(),
                size,
                offset,
            },
        );
        let mut done = offset;
        let mut last_report = done;
        if let Some(r) = resp.as_mut() {
            while let Some(chunk) = r.chunk().await.map_err(|e| http_err(&url, e))? {
                done += chunk.len() as u64;
                if done > size {
                    return Err(Error::SizeMismatch {
                        what,
                        expected: size,
                        actual: done,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .ctx(|| format!("write {}", partial.display()))?;
                if let Some(f) = feed {
                    // A reader that gave up (its build failed) is not an error of the download.
                    let _ = f.send(Feed::Data(chunk)).await;
                }
                if done - last_report >= (1 << 20) || done == size {
                    last_report = done;
                    emit(
                        progress,
                        Progress::LayerProgress {
                            digest: d.clone(),
                            done,
                            size,
                        },
                    );
                }
            }
        }
        file.flush()
            .await
            .ctx(|| format!("write {}", partial.display()))?;
        if done != size {
            return Err(Error::SizeMismatch {
                what,
                expected: size,
                actual: done,
            });
        }
        let actual = hasher.finish();
        if &actual != d {
            return Err(Error::DigestMismatch {
                what,
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(f) = feed {
            // The reader saw exactly the bytes that were hashed: they are verified. It need
            // not wait for them to reach the disk.
            let _ = f.send(Feed::End).await;
        }
        file.sync_all()
            .await
            .ctx(|| format!("fsync {}", partial.display()))?;
        Ok(())
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize, url: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| http_err(url, e))? {
        if out.len() + c.len() > max {
            return Err(Error::LimitExceeded {
                what: url.to_owned(),
                reason: format!("document larger than {max} bytes"),
            });
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Parse `k="v",k2=v2` challenge parameters.
fn parse_challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((k, v));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let p = parse_challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(
            p[2],
            ("scope".into(), "repository:library/alpine:pull".into())
        );
    }

    #[test]
    fn docker_config_lookup() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        std::fs::write(&p, format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"a","password":"b"}}}}}}"#)).unwrap();
        let c = docker_credentials(&p, "docker.io").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let c = docker_credentials(&p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(c.username, "a");
        assert!(docker_credentials(&p, "ghcr.io").unwrap().is_none());
        // A helper that is not installed is skipped; a bad helper name is an error.
        std::fs::write(
            &p,
            r#"{"credsStore":"vmsan-test-absent","auths":{"h:1":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        assert_eq!(
            docker_credentials(&p, "h:1").unwrap().unwrap().username,
            "a"
        );
        std::fs::write(&p, r#"{"credHelpers":{"h:1":"../../bin/sh"}}"#).unwrap();
        assert!(docker_credentials(&p, "h:1").is_err());
        assert!(
            is_loopback_host("127.0.0.1:5000")
                && is_loopback_host("localhost")
                && is_loopback_host("[::1]:5000")
        );
        assert!(!is_loopback_host("ghcr.io"));
    }
}
