//! End-to-end tests of the `ferry-server` binary against real stores (file://, a local HTTP server, s3s-fs) and
//! real ONNX models whose expected predictions come from scikit-learn.

mod admin;
mod binary;
mod clients;
mod configuration;
mod failures;
mod grpc;
mod inplace;
mod lifecycle;
mod predictions;
mod protocol;
mod refresh;
mod support;
