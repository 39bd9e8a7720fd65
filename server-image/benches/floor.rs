//! The floor of benches/run.sh: servers that answer every inference with a fixed response and do no work, on
//! the same stack as ferry-server (axum over hyper for HTTP, tonic for gRPC), so their requests/s bound what any
//! server on that stack reaches with the same load generator.
//!
//! cargo bench -p ferry-server --bench floor -- http PORT RESPONSE_FILE   (answers every request with the file)
//! cargo bench -p ferry-server --bench floor -- grpc PORT RESPONSE_FILE   (ModelInfer answers the serialized
//!                                                                          ModelInferResponse in the file)

use ferry_server::grpc::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use ferry_server::grpc::proto::*;
use prost::Message;
use tonic::{Request, Response, Status};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip_while(|a| a != "http" && a != "grpc")
        .collect();
    let [mode, port, file] = &args[..] else {
        eprintln!(
            "usage: cargo bench -p ferry-server --bench floor -- (http|grpc) PORT RESPONSE_FILE"
        );
        std::process::exit(2);
    };
    let port: u16 = port.parse().expect("a port");
    let response = std::fs::read(file).expect("the response file");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        if mode == "http" {
            let body = bytes::Bytes::from(response);
            let app = axum::Router::new().fallback(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            });
            axum::serve(listener, app).await.expect("serve");
        } else {
            let fixed = ModelInferResponse::decode(&response[..]).expect("a ModelInferResponse");
            tonic::transport::Server::builder()
                .add_service(GrpcInferenceServiceServer::new(Fixed(fixed)))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                )
                .await
                .expect("serve");
        }
    });
}

struct Fixed(ModelInferResponse);

#[tonic::async_trait]
impl GrpcInferenceService for Fixed {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse::default()))
    }
    async fn model_metadata(
        &self,
        _: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Ok(Response::new(ModelMetadataResponse::default()))
    }
    async fn model_infer(
        &self,
        _: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
}
