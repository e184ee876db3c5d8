//! The OTLP/gRPC receiver (`--otlp-grpc-listen`, default `127.0.0.1:4317`):
//! the OpenTelemetry `TraceService` and `LogsService`, with the same
//! durability, idempotence and partial-success answers as OTLP/HTTP (they
//! share [`super::ingest::accept_traces`] and [`super::ingest::accept_logs`]).
//! Requests may be gzip-compressed, as exporters send them.

use super::error::ApiError;
use super::ingest::{accept_logs, accept_traces};
use crate::ingest::Format;
use crate::service::Shared;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// The two OTLP services over one shared state.
#[derive(Clone)]
pub struct Otlp {
    shared: Arc<Shared>,
}

/// The gRPC status an API error maps to (the OTLP spec: retryable
/// failures are UNAVAILABLE, bad data INVALID_ARGUMENT).
fn status_of(e: ApiError) -> Status {
    let code = match e.status().as_u16() {
        400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        429 | 503 => tonic::Code::Unavailable,
        507 => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Internal,
    };
    Status::new(code, e.to_string())
}

fn count(shared: &Shared, service: &str, code: &str) {
    shared
        .metrics
        .requests
        .get_or_create(&crate::service::metrics::RequestLabels {
            endpoint: format!("grpc:{service}"),
            code: code.to_string(),
        })
        .inc();
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        // Stored as protobuf, like an OTLP/HTTP request.
        let body = bytes::Bytes::from(prost::Message::encode_to_vec(&req));
        match accept_traces(&self.shared, &req, body, Format::OtlpProto).await {
            Ok(p) => {
                count(&self.shared, "traces", "ok");
                Ok(Response::new(ExportTraceServiceResponse {
                    partial_success: (p.rejected > 0).then_some(ExportTracePartialSuccess {
                        rejected_spans: p.rejected as i64,
                        error_message: p.message,
                    }),
                }))
            }
            Err(e) => {
                let s = status_of(e);
                count(&self.shared, "traces", &format!("{:?}", s.code()));
                Err(s)
            }
        }
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let body = bytes::Bytes::from(prost::Message::encode_to_vec(&req));
        match accept_logs(&self.shared, &req, body, Format::OtlpProto).await {
            Ok(p) => {
                count(&self.shared, "logs", "ok");
                Ok(Response::new(ExportLogsServiceResponse {
                    partial_success: (p.rejected > 0).then_some(ExportLogsPartialSuccess {
                        rejected_log_records: p.rejected as i64,
                        error_message: p.message,
                    }),
                }))
            }
            Err(e) => {
                let s = status_of(e);
                count(&self.shared, "logs", &format!("{:?}", s.code()));
                Err(s)
            }
        }
    }
}

/// The gRPC services (trace and logs) as a router, behind the same token,
/// `Host` and counting layers as the HTTP API; served by [`super::server`].
pub fn router(shared: Arc<Shared>) -> axum::Router {
    let limit = shared.max_body;
    let svc = Otlp { shared: shared.clone() };
    let traces = TraceServiceServer::new(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    tonic::service::Routes::new(traces)
        .add_service(logs)
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(shared.clone(), super::authorize))
        .layer(axum::middleware::from_fn_with_state(shared, super::check_host))
}
