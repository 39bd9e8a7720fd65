//! End-to-end tests of the `ferry-server` binary against real stores (file://, a local HTTP server, s3s-fs, and the
//! Azurite and fake-gcs-server emulators) and real ONNX models whose expected predictions come from scikit-learn.

mod admin;
mod azure;
mod binary;
mod clients;
mod configuration;
mod failures;
mod gcs;
mod grpc;
mod inplace;
mod lifecycle;
mod listeners;
mod predictions;
mod protocol;
mod python;
mod refresh;
mod support;
mod validation;
