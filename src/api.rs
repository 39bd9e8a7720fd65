//! The Kubernetes API Ferry serves: versioned custom resource types.

pub mod model_runtime;
pub mod v1alpha1;

pub use model_runtime::*;
pub use v1alpha1::*;
