//! vmsan-image: images without Docker.
//!
//! * [`setup()`]: install Firecracker, the jailer and the guest kernel (checksums verified,
//!   version range checked, root-owned install directories), or take local files.
//! * [`reference`](mod@reference): image references with the OCI distribution grammar, and the
//!   `docker-archive:`, `oci:`, `oci-archive:` transports.
//! * [`ImageStore::pull`]: the registry v2 protocol (anonymous, bearer token, credentials from
//!   the Docker config file: `auths` entries and `credHelpers`/`credsStore` helpers), platform
//!   selection from an index, a content-addressed blob cache with streaming digest
//!   verification, resumable and parallel downloads, then a read-only filesystem cached by
//!   manifest digest and compression with the image config stored beside it. Squashfs images
//!   (the default) are built while the layers download: each layer is decompressed, indexed
//!   and its file contents compressed (zstd, or LZ4 for kernels that cannot read zstd: see
//!   [`Compression`]) on its own thread as its bytes arrive, the layers are merged in
//!   memory with the same rules as the on-disk merge, and the image is written from that
//!   tree by the crate's own squashfs writer (no staging directory, no `mksquashfs`; layer
//!   xattrs kept). Ext4 images use a safe on-disk merge ([`merge`]) and `mkfs.ext4 -d`
//!   ([`build`]).
//! * [`ImageStore::import`], [`ImageStore::list`], [`ImageStore::remove`], [`ImageStore::prune`].
//! * [`initrd`]: the agent's initrd (newc cpio written here); [`disk`]: the per-VM overlay disk.
//! * [`runtimes`]: `base`, `node22`, `node24`, `python3.13` as image references.
//! * [`progress`]: events for the CLI's progress bars.
//!
//! How the host library uses it to prepare a VM:
//!
//! ```text
//! let store = ImageStore::open(&home)?;                        // <home>/images
//! let src = runtimes::runtime_image("node22").unwrap();         // or --from-image REF
//! let img = store.pull(src, &PullOptions { policy, progress, ..Default::default() }).await?;
//! // drive rootfs = img.rootfs (read-only); kernel arg vmsan_rootfs_fs = img.record.fs_type.as_str()
//! // exec defaults = img.config (Env, WorkingDir, User, Entrypoint, Cmd)
//! let initrd = store.ensure_initrd(&agent_binary)?;             // rebuilt when the agent changes
//! let template = store.overlay_template(disk_bytes)?;           // once per size
//! create_overlay_disk(&template, &vm_dir.join("overlay.ext4"))?; // per VM, milliseconds
//! // the config drive is `GuestConfig::to_drive_bytes` (vmsan-proto), written by vmsan-core
//! ```
//!
//! `setup(&SetupOptions::new(&home))` installs `<home>/bin/{firecracker,jailer}` and
//! `<home>/kernels/vmlinux`; [`check_trusted_binary`] must pass before either binary is run.

pub mod build;
mod compression;
pub mod digest;
pub mod disk;
pub mod error;
pub mod initrd;
mod layer;
pub mod manifest;
pub mod merge;
pub mod modes;
pub mod progress;
pub mod pull;
pub mod reference;
mod registry;
pub mod runtimes;
pub mod setup;
mod squashfs;
pub mod store;
mod sys;
mod tree;

pub use build::{BuildOptions, StagingArea};
pub use compression::Compression;
pub use digest::Digest;
pub use disk::{CloneMethod, copy_data_extents, create_overlay_disk};
pub use error::{Error, ErrorKind, Result, with_causes};
pub use layer::Limits;
pub use manifest::{ImageConfig, Platform};
pub use progress::{Progress, ProgressFn};
pub use pull::{PullOptions, PullPolicy};
pub use reference::{ImageSource, Reference};
pub use registry::{Credentials, default_docker_config, docker_credentials};
pub use setup::{SetupOptions, SetupReport, check_trusted_binary, setup};
pub use store::{FsType, Image, ImageRecord, ImageStore, ImageSummary, PruneReport, home_from_env};
