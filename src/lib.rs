//! Ferry: a Kubernetes operator that rolls ML model versions out blue/green into the generic
//! ferry-server image.
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod admin_credential;
pub mod api;
pub mod catalogue;
pub mod children;
pub mod conditions;
pub mod config;
pub mod controller;
pub mod crd;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observed;
pub mod plugin;
pub mod pod_state;
pub mod rollout;
pub mod server_contract;
