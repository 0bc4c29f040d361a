//! From validated `create` options to what a VM boots: kernel, initrd, image, disk.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use vmsan_image::{ImageStore, PullOptions};
use vmsan_proto::FsType;

use crate::artifacts;
use crate::error::{Error, ErrorCode, Result};
use crate::paths::Paths;
use crate::state::{ImageState, NetworkState, RuntimeName};
use crate::validate::options::{CreateOptions, PullPolicy, RootSource};
use crate::vm::spec::{BootMedia, VmSpec};

/// A failed pull of a name that only a registry lookup made remote: say that it was not found
/// locally first, and which local images there are (a mistyped local name otherwise reads as
/// a network problem with Docker Hub).
fn pull_error(store: &ImageStore, reference: &str, e: vmsan_image::Error) -> Error {
    // Docker's rule: the first component names a registry only when it looks like a host.
    let names_registry = reference
        .split_once('/')
        .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost");
    let err = Error::from(e);
    if names_registry || err.code() != ErrorCode::ImagePullFailed {
        return err;
    }
    let local: Vec<String> = store
        .list()
        .map(|images| images.into_iter().flat_map(|i| i.names).collect())
        .unwrap_or_default();
    let why = format!(
        "{reference:?} is not an image on this host, so it was looked up on Docker Hub, and that failed."
    );
    let fix = if local.is_empty() {
        "Check the name; import a root filesystem with `vmsan image import`, or pull from a \
         reachable registry (`vmsan image pull REGISTRY/NAME:TAG`)."
            .to_owned()
    } else {
        format!(
            "Check the name: local images are {}. See `vmsan image ls`.",
            local.join(", ")
        )
    };
    err.why(why).fix(fix)
}

/// How this home builds images: the compression `vmsan setup --image-compression` stored, for
/// every build (`create`, `image pull`, `image import`), so that one setting holds for the
/// whole image store.
pub fn build_options(paths: &Paths) -> Result<vmsan_image::BuildOptions> {
    Ok(vmsan_image::BuildOptions {
        compression: artifacts::stored_image_compression(paths)?,
        ..vmsan_image::BuildOptions::default()
    })
}

/// The settings of a new VM, from its validated options.
pub(super) fn spec_of(opts: &CreateOptions) -> VmSpec {
    let rules = &opts.network;
    let network = NetworkState {
        network_policy: rules.policy,
        allowed_domains: rules.allowed_domains.clone(),
        allowed_cidrs: rules.allowed_cidrs.clone(),
        denied_cidrs: rules.denied_cidrs.clone(),
        allow_udp: rules.allow_udp,
        allow_lan: rules.allow_lan,
        published_ports: opts.published_ports.clone(),
        bandwidth_mbit: opts.bandwidth_mbit,
        dns_servers: if opts.dns_servers.is_empty() {
            default_dns_servers()
        } else {
            opts.dns_servers.clone()
        },
        ..NetworkState::default()
    };
    VmSpec {
        vcpus: opts.vcpus,
        memory_mib: opts.memory_mib,
        disk_bytes: u64::from(opts.disk.gib) << 30,
        project: opts.project.clone(),
        runtime: match &opts.root {
            Some(RootSource::Runtime { runtime }) => RuntimeName::Named(*runtime),
            Some(RootSource::Image { .. }) => RuntimeName::Image,
            Some(RootSource::Rootfs { .. }) => RuntimeName::Rootfs,
            None => RuntimeName::default(),
        },
        timeout: opts.timeout,
        network,
        isolation: opts.isolation,
        boot: crate::state::BootSettings {
            kernel_args: opts.kernel_args.clone(),
            cpu_template: opts.cpu_template.clone(),
            boot_timeout_ms: opts
                .boot_timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        },
        init: opts.init,
    }
}

/// The host's own resolvers (from /etc/resolv.conf), which the VM's DNS filter forwards to.
/// Loopback resolvers (systemd-resolved's 127.0.0.53) are useless from a VM's namespace, so
/// they are replaced by the public resolvers vmsan falls back to.
fn default_dns_servers() -> Vec<Ipv4Addr> {
    // systemd-resolved keeps the real upstreams here; /etc/resolv.conf then names 127.0.0.53.
    let text = ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let found: Vec<Ipv4Addr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    if found.is_empty() {
        vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]
    } else {
        found
    }
}

/// The guest kernel (`kernel`, or the installed one) and the initrd holding the installed
/// agent (rebuilt when the agent changed).
pub(crate) fn boot_files(paths: &Paths, kernel: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let kernel = match kernel {
        Some(k) => k.to_owned(),
        None => artifacts::find_kernel(paths).ok_or_else(|| {
            Error::new(
                ErrorCode::SetupNoKernel,
                format!("No guest kernel in {}", paths.kernels_dir().display()),
            )
        })?,
    };
    let agent = artifacts::find_agent(paths).ok_or_else(|| {
        Error::new(ErrorCode::SetupMissingBinary, "vmsan-agent not found")
            .fix("Reinstall vmsan with `scripts/install` (it installs the static agent).")
    })?;
    let store = ImageStore::open(paths.home()).map_err(Error::from)?;
    let initrd = store.ensure_initrd(&agent).map_err(Error::from)?;
    Ok((kernel, initrd))
}

/// Kernel, initrd and image for a new VM (pulling or building the image when needed).
pub(super) async fn resolve_media(
    paths: &Paths,
    opts: &CreateOptions,
    progress: Option<vmsan_image::ProgressFn>,
) -> Result<BootMedia> {
    let (kernel, initrd) = boot_files(paths, opts.kernel.as_deref())?;
    let kernel_args = artifacts::stored_kernel_args(paths, &kernel)?;
    let store = ImageStore::open(paths.home()).map_err(Error::from)?;

    let (reference, policy) = match &opts.root {
        Some(RootSource::Rootfs { path }) => {
            return Ok(BootMedia {
                kernel,
                initrd,
                rootfs: path.clone(),
                rootfs_fs: detect_fs(path)?,
                image: None,
                image_config: vmsan_proto::ImageConfig::default(),
                kernel_args,
            });
        }
        Some(RootSource::Image { reference, pull }) => (reference.clone(), *pull),
        Some(RootSource::Runtime { runtime }) => {
            (runtime_ref(runtime.as_str())?, PullPolicy::Missing)
        }
        None => (runtime_ref("base")?, PullPolicy::Missing),
    };
    let pull = PullOptions {
        policy,
        progress,
        build: build_options(paths)?,
        ..PullOptions::default()
    };
    let image = store
        .pull(&reference, &pull)
        .await
        .map_err(|e| pull_error(&store, &reference, e))?;
    Ok(BootMedia {
        kernel,
        initrd,
        rootfs: image.rootfs.clone(),
        rootfs_fs: image.record.fs_type,
        image: Some(ImageState {
            reference,
            digest: Some(image.record.digest.to_string()),
        }),
        image_config: image.config.clone(),
        kernel_args,
    })
}

fn runtime_ref(name: &str) -> Result<String> {
    vmsan_image::runtimes::runtime_image(name)
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::ValidationRuntime,
                format!("Unknown runtime {name:?}"),
            )
        })
}

/// `squashfs` or `ext4`, from the filesystem's magic number.
fn detect_fs(path: &Path) -> Result<FsType> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut head = [0u8; 4];
    f.read_exact(&mut head)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if &head == b"hsqs" {
        return Ok(FsType::Squashfs);
    }
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080))
        .and_then(|_| f.read_exact(&mut magic))
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if magic == [0x53, 0xEF] {
        return Ok(FsType::Ext4);
    }
    Err(Error::new(
        ErrorCode::ValidationPath,
        format!(
            "{} is neither a squashfs nor an ext4 filesystem image",
            path.display()
        ),
    ))
}

/// Makes a VM's writable disk: a sparse copy (or reflink) of a prepared empty ext4 template.
pub(super) fn make_disk(paths: &Paths) -> impl Fn(&Path, u64) -> Result<()> + '_ {
    move |dest: &Path, bytes: u64| {
        let store = ImageStore::open(paths.home()).map_err(Error::from)?;
        let template: PathBuf = store.overlay_template(bytes).map_err(Error::from)?;
        vmsan_image::create_overlay_disk(&template, dest).map_err(Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> vmsan_image::Error {
        vmsan_image::Error::Status {
            url: "https://registry-1.docker.io/v2/library/busybx/manifests/latest".into(),
            status: 401,
            body: String::new(),
        }
    }

    #[test]
    fn a_short_name_that_fails_on_docker_hub_says_it_was_not_local() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let e = pull_error(&store, "busybx", failed());
        assert_eq!(e.code(), ErrorCode::ImagePullFailed);
        assert!(
            e.why_text().unwrap().contains("not an image on this host"),
            "{e:?}"
        );
        assert!(
            e.fix_text().unwrap().contains("vmsan image import"),
            "{e:?}"
        );
        // A name with its own registry failed there: nothing to add.
        let e = pull_error(&store, "registry.example:5000/busybx", failed());
        assert!(
            e.why_text()
                .is_none_or(|w| !w.contains("not an image on this host"))
        );
    }
}
