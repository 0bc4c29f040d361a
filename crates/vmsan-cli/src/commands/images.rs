//! `vmsan setup` and `vmsan image ls|pull|import|rm|prune`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;
use vmsan_core::artifacts;
use vmsan_core::error::{Error, ErrorCode};
use vmsan_core::validate::options::{
    ImageImportOptions, ImagePruneOptions, ImagePullOptions, ImageRemoveOptions, SetupOptions,
};
use vmsan_core::vm::build_options;
use vmsan_image::{ImageStore, PullOptions};

use super::Ctx;
use crate::output::Outcome;

fn store(ctx: &Ctx) -> Result<ImageStore, Error> {
    ImageStore::open(ctx.paths.home()).map_err(Error::from)
}

fn progress(ctx: &Ctx) -> Option<vmsan_image::ProgressFn> {
    crate::progress::image_progress(ctx.out.json)
}

/// `vmsan setup`.
pub(crate) fn setup(ctx: &Ctx, opts: &SetupOptions) -> Result<Outcome, Error> {
    // Nothing is installed into a home no VM could run from.
    vmsan_core::vm::check_home(&ctx.paths)?;
    // The home first, as the state store makes it: 0750, in the `vmsan` group when the host
    // has one (what setup installs inside takes that group).
    vmsan_core::state::StateStore::open(&ctx.paths)?.init()?;
    let mut so = vmsan_image::SetupOptions::new(ctx.paths.home());
    so.firecracker = opts.firecracker.clone();
    so.jailer = opts.jailer.clone();
    so.kernel = opts.kernel.clone();
    if let Some(url) = &opts.release_url {
        so.release_base_url = url.clone();
    }
    so.progress = progress(ctx);
    let report = ctx
        .runtime()?
        .block_on(vmsan_image::setup(&so))
        .map_err(Error::from)?;
    let agent = install_agent(&ctx.paths, opts.agent.as_deref())?;
    artifacts::store_kernel_args(&ctx.paths, &opts.kernel_args)?;
    artifacts::store_image_compression(&ctx.paths, opts.image_compression)?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Firecracker {} installed: {}",
        report.version,
        report.firecracker.display()
    );
    let _ = writeln!(text, "Jailer: {}", report.jailer.display());
    let _ = writeln!(text, "Kernel: {}", report.kernel.display());
    if !opts.kernel_args.is_empty() {
        let _ = writeln!(text, "Kernel arguments: {}", opts.kernel_args);
    }
    let _ = writeln!(
        text,
        "Image compression: {} (squashfs images are built with it from now on)",
        opts.image_compression
    );
    let _ = writeln!(text, "Guest agent: {}", agent.display());
    let group = vmsan_core::state::GROUP_NAME;
    let gid = vmsan_core::state::vmsan_gid();
    match gid {
        Some(gid) => {
            let _ = writeln!(
                text,
                "Group: {group} (gid {gid}); its members may list, inspect, exec, connect and \
                 copy files without sudo: `sudo usermod -aG {group} USER`."
            );
        }
        // Made by scripts/install; setup does not edit the host's user database itself.
        None => ctx.out.note(&format!(
            "NOTE: this host has no `{group}` group, so only root can use vmsan. To let users \
             list, inspect, exec and copy files without sudo: `sudo groupadd --system {group}`, \
             `sudo usermod -aG {group} USER`, then run `sudo vmsan setup` again."
        )),
    }
    let _ = writeln!(
        text,
        "Next: `sudo vmsan doctor`, then `sudo vmsan create --connect`."
    );
    Ok(Outcome::ok(
        json!({
            "firecracker": report.firecracker,
            "jailer": report.jailer,
            "kernel": report.kernel,
            "kernelArgs": opts.kernel_args,
            "imageCompression": opts.image_compression.as_str(),
            "agent": agent,
            "version": report.version,
            "group": gid.map(|gid| json!({ "name": group, "gid": gid })),
        }),
        text,
    ))
}

/// Copy the static guest agent into `<home>/bin` (root-owned, 0755), from `--agent` or from
/// where `scripts/install` put it beside vmsan.
fn install_agent(
    paths: &vmsan_core::Paths,
    given: Option<&Path>,
) -> Result<std::path::PathBuf, Error> {
    let dest = paths.bin_dir().join("vmsan-agent");
    let source = match given {
        Some(p) => p.to_owned(),
        None => match artifacts::find_agent(paths) {
            Some(p) => p,
            None => {
                return Err(Error::new(ErrorCode::SetupMissingBinary, "No static vmsan-agent to install")
                    .fix("Pass --agent PATH (build it with `scripts/build-agent`), or reinstall with `scripts/install`."));
            }
        },
    };
    if source == dest {
        return Ok(dest);
    }
    match artifacts::is_static_elf(&source) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::new(
                ErrorCode::SetupMissingBinary,
                format!(
                    "{} is dynamically linked; the guest agent must be static",
                    source.display()
                ),
            )
            .fix("Build it with `scripts/build-agent`."));
        }
        Err(e) => return Err(Error::io(format!("read {}", source.display()), e)),
    }
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(&source, &tmp)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::os::unix::fs::chown(&tmp, Some(0), Some(0))?;
            std::fs::rename(&tmp, &dest)
        })
        .map_err(|e| Error::io(format!("install {}", dest.display()), e))?;
    Ok(dest)
}

fn image_doc(img: &vmsan_image::Image) -> serde_json::Value {
    json!({
        "name": img.name,
        "digest": img.record.digest.to_string(),
        "fsType": img.record.fs_type.as_str(),
        "compression": img.record.squashfs_compression().map(|c| c.as_str()),
        "size": img.record.size,
        "rootfs": img.rootfs,
    })
}

/// `vmsan image pull`.
pub(crate) fn pull(ctx: &Ctx, opts: &ImagePullOptions) -> Result<Outcome, Error> {
    let store = store(ctx)?;
    let mut po = PullOptions {
        policy: vmsan_image::PullPolicy::Always,
        progress: progress(ctx),
        build: build_options(&ctx.paths)?,
        ..PullOptions::default()
    };
    if let Some(p) = &opts.platform {
        po.platform = Some(platform(p)?);
    }
    let img = ctx
        .runtime()?
        .block_on(store.pull(&opts.reference, &po))
        .map_err(Error::from)?;
    let text = format!(
        "Pulled {} ({}, {} bytes)\n",
        img.name, img.record.digest, img.record.size
    );
    Ok(Outcome::ok(image_doc(&img), text))
}

/// `vmsan image import`.
pub(crate) fn import(ctx: &Ctx, opts: &ImageImportOptions) -> Result<Outcome, Error> {
    let store = store(ctx)?;
    let po = PullOptions {
        progress: progress(ctx),
        build: build_options(&ctx.paths)?,
        ..PullOptions::default()
    };
    let img = ctx
        .runtime()?
        .block_on(store.import(
            &opts.path,
            &opts.name,
            vmsan_image::ImageConfig::default(),
            &po,
        ))
        .map_err(Error::from)?;
    let text = format!(
        "Imported {} as {} ({} bytes)\n",
        opts.path.display(),
        img.name,
        img.record.size
    );
    Ok(Outcome::ok(image_doc(&img), text))
}

/// `vmsan image ls`.
pub(crate) fn list(ctx: &Ctx) -> Result<Outcome, Error> {
    // Listing reads: a home without an image store has no images, and is not created.
    let images = if ctx.paths.home().join("images").is_dir() {
        store(ctx)?.list().map_err(Error::from)?
    } else {
        Vec::new()
    };
    let mut text = String::new();
    if images.is_empty() {
        text.push_str("No images.\n");
    } else {
        let _ = writeln!(
            text,
            "{:<40} {:<20} {:>10} {:<13}",
            "NAME", "DIGEST", "SIZE", "FS"
        );
        for i in &images {
            let digest = i.digest.to_string();
            let short = digest.get(..19).unwrap_or(&digest);
            let fs = match i.compression {
                Some(c) => format!("{} ({c})", i.fs_type.as_str()),
                None => i.fs_type.as_str().to_owned(),
            };
            let _ = writeln!(
                text,
                "{:<40} {:<20} {:>10} {:<13}",
                i.names.join(","),
                short,
                format!("{:.1} MB", i.size as f64 / 1e6),
                fs
            );
        }
    }
    let doc = json!({
        "count": images.len(),
        "images": images.iter().map(|i| json!({
            "names": i.names,
            "digest": i.digest.to_string(),
            "fsType": i.fs_type.as_str(),
            "compression": i.compression.map(|c| c.as_str()),
            "size": i.size,
            "lastUsed": vmsan_core::time::format_rfc3339(i.last_used.saturating_mul(1000)),
            "builtAt": vmsan_core::time::format_rfc3339(i.built_at.saturating_mul(1000)),
        })).collect::<Vec<_>>(),
    });
    Ok(Outcome::ok(doc, text))
}

/// `vmsan image rm`.
pub(crate) fn remove(ctx: &Ctx, opts: &ImageRemoveOptions) -> Result<Outcome, Error> {
    let store = store(ctx)?;
    let mut removed = Vec::new();
    for r in &opts.references {
        removed.extend(store.remove(r).map_err(Error::from)?);
    }
    let text: String = removed.iter().map(|r| format!("Removed {r}\n")).collect();
    Ok(Outcome::ok(json!({ "removed": removed }), text))
}

/// `vmsan image prune`.
pub(crate) fn prune(ctx: &Ctx, _opts: &ImagePruneOptions) -> Result<Outcome, Error> {
    let r = store(ctx)?.prune().map_err(Error::from)?;
    let text = format!(
        "Pruned {} image(s), {} blob(s), {} bytes\n",
        r.images.len(),
        r.blobs,
        r.bytes
    );
    Ok(Outcome::ok(
        json!({ "images": r.images.iter().map(ToString::to_string).collect::<Vec<_>>(), "blobs": r.blobs, "bytes": r.bytes }),
        text,
    ))
}

/// `os/arch[/variant]`, e.g. `linux/arm64/v8`.
fn platform(p: &str) -> Result<vmsan_image::Platform, Error> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
            Ok(vmsan_image::Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: parts.get(2).map(|v| (*v).to_owned()),
            })
        }
        _ => Err(Error::new(
            ErrorCode::ValidationArgs,
            format!("Invalid --platform {p:?}"),
        )
        .fix("Use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8.")),
    }
}
