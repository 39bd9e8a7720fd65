//! The Kubernetes API Ferry serves: versioned custom resource types.

pub mod v1alpha1;

pub use v1alpha1::*;
