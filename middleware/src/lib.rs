//! Tower layers and building blocks for streaming HTTP gateways.
//!
//! Nothing here knows about pingora, Redis or agentgate's API: the pieces work in any
//! tower-based server (hyper, axum, tonic).
//!
//! - [`existence_cache`]: cached, single-flight "does this key exist?" in front of a service.
//! - [`sse`]: Server-Sent Events framing.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "existence-cache")]
pub mod existence_cache;
#[cfg(feature = "sse")]
pub mod sse;
