//! Ferry: a Kubernetes operator that rolls ML model versions out blue/green into the generic
//! ferry-server image.
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod api;
pub mod conditions;
pub mod crd;
pub mod labels;
pub mod rollout;
