//! The only place in the host library allowed to use `unsafe`: thin, checked wrappers around
//! system calls that std and nix do not cover.
#![allow(unsafe_code)]

pub(crate) mod kvm;
pub(crate) mod mem;
pub(crate) mod netns;
pub(crate) mod proc;
