//! Test helpers: a real `docker-registry` on loopback, pushing over the HTTP API, layer tars.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` process with its storage in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub auth: Option<(String, String)>,
    pub bearer: Option<String>,
    _token_server: Option<TinyHttp>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start(with_auth: bool) -> Option<Self> {
        if !have("docker-registry") {
            vmsan_testkit::skip!(
                "docker-registry is not installed (apt-get install docker-registry)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_cfg = String::new();
        let mut auth = None;
        if with_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", "tester", "s3cret"])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
            auth = Some(("tester".to_owned(), "s3cret".to_owned()));
        }
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_cfg}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Self {
            child,
            addr,
            dir,
            auth,
            bearer: None,
            _token_server: None,
        };
        // No readiness event exists: poll the port with a deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    /// A registry with token authentication: a JWT (RS256, x5c) issued by a loopback token
    /// server that the test runs, signed with a throw-away key made by `openssl`.
    pub fn start_with_token_auth(repo: &str) -> Option<Self> {
        if !have("docker-registry") || !have("openssl") {
            vmsan_testkit::skip!("docker-registry or openssl is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=vmsan-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        use base64::Engine as _;
        let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"iss": "vmsan-test-issuer", "sub": "tester", "aud": "vmsan-test-registry",
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("j{now}"),
            "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]});
        let signing_input = format!(
            "{}.{}",
            b64u(&serde_json::to_vec(&header).unwrap()),
            b64u(&serde_json::to_vec(&claims).unwrap())
        );
        std::fs::write(dir.path().join("input"), &signing_input).unwrap();
        let sig = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg(dir.path().join("input"))
            .output()
            .unwrap();
        assert!(sig.status.success());
        let jwt = format!("{signing_input}.{}", b64u(&sig.stdout));
        let mut routes = std::collections::HashMap::new();
        routes.insert(
            "/token".to_owned(),
            serde_json::to_vec(&serde_json::json!({"token": jwt, "expires_in": 3600})).unwrap(),
        );
        let token_server = TinyHttp::start(routes);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  token:\n    realm: http://{}/token\n    service: vmsan-test-registry\n    issuer: vmsan-test-issuer\n    rootcertbundle: {}\n",
            dir.path().join("data").display(),
            token_server.addr,
            cert.display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Self {
            child,
            addr,
            dir,
            auth: None,
            bearer: Some(jwt),
            _token_server: Some(token_server),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn req(&self, c: &reqwest::Client, m: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let b = c.request(m, url);
        match (&self.auth, &self.bearer) {
            (_, Some(t)) => b.bearer_auth(t),
            (Some((u, p)), None) => b.basic_auth(u, Some(p)),
            (None, None) => b,
        }
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let c = reqwest::Client::new();
        let d = sha(data);
        let r = self
            .req(
                &c,
                reqwest::Method::POST,
                &format!("http://{}/v2/{repo}/blobs/uploads/", self.addr),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("http://{}{loc}", self.addr)
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .req(&c, reqwest::Method::PUT, &format!("{loc}{sep}digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
        d
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let c = reqwest::Client::new();
        let r = self
            .req(
                &c,
                reqwest::Method::PUT,
                &format!("http://{}/v2/{repo}/manifests/{tag}", self.addr),
            )
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
        sha(body)
    }

    /// Push an image: config + layers (already encoded) with their media types.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        arch: &str,
        config: serde_json::Value,
        layers: &[(Vec<u8>, &str)],
    ) -> (String, Vec<u8>) {
        let mut cfg = config;
        cfg["architecture"] = arch.into();
        cfg["os"] = "linux".into();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(b, mt)| {
                if *mt == GZ {
                    let mut raw = Vec::new();
                    flate2::read::GzDecoder::new(b.as_slice())
                        .read_to_end(&mut raw)
                        .unwrap();
                    sha(&raw)
                } else {
                    sha(b)
                }
            })
            .collect();
        cfg["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
        let cfg_b = serde_json::to_vec(&cfg).unwrap();
        let cfg_d = self.push_blob(repo, &cfg_b).await;
        let mut descs = Vec::new();
        for (b, mt) in layers {
            let d = self.push_blob(repo, b).await;
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": b.len()}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_b.len()},
            "layers": descs,
        });
        let mb = serde_json::to_vec(&m).unwrap();
        let d = self
            .push_manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", &mb)
            .await;
        (d, mb)
    }

    /// On-disk data file of a blob in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

pub const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Builds a layer tar in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

impl Layer {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }
    pub fn dir(mut self, p: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.b.append_data(&mut h, p, std::io::empty()).unwrap();
        self
    }
    pub fn file(mut self, p: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    /// A regular file with extended attributes (PAX `SCHILY.xattr.NAME` records).
    pub fn file_with_xattrs(
        mut self,
        p: &str,
        data: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        self.b
            .append_pax_extensions(
                keys.iter()
                    .map(String::as_str)
                    .zip(xattrs.iter().map(|(_, v)| *v)),
            )
            .unwrap();
        let mut h = header(tar::EntryType::Regular, mode, 0, 0, data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    pub fn hardlink(mut self, p: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644, 0, 0)
    }
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644, 0, 0)
    }
    /// An entry whose raw name is written as-is (for `../` and absolute paths).
    pub fn raw_file(mut self, raw_name: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..raw_name.len()].copy_from_slice(raw_name.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
    pub fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// One line of `unsquashfs -lln`: mode string, "uid/gid", size, symlink target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub mode: String,
    pub owner: String,
    pub size: u64,
    pub target: Option<String>,
}

pub fn unsquashfs_list(img: &Path) -> std::collections::BTreeMap<String, LsEntry> {
    let out = Command::new("unsquashfs")
        .arg("-lln")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // mode owner size date time path[ -> target]
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 6 || !line.starts_with(['-', 'd', 'l', 'c', 'b', 'p', 's']) {
            continue;
        }
        let path_and_target = toks[5..].join(" ");
        let (path, target) = match path_and_target.split_once(" -> ") {
            Some((p, t)) => (p.to_owned(), Some(t.to_owned())),
            None => (path_and_target.clone(), None),
        };
        let path = path
            .strip_prefix("squashfs-root")
            .unwrap_or(&path)
            .to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        m.insert(
            path,
            LsEntry {
                mode: toks[0].to_owned(),
                owner: toks[1].to_owned(),
                size: toks[2].parse().unwrap_or(0),
                target,
            },
        );
    }
    m
}

/// Serve fixed responses over HTTP/1.1 on loopback from a thread; `path -> body`.
pub struct TinyHttp {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TinyHttp {
    pub fn start(routes: std::collections::HashMap<String, Vec<u8>>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let path = path.split('?').next().unwrap_or("/").to_owned();
                let resp = match routes.get(&path) {
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = c.write_all(&resp);
            }
        });
        Self {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
