//! Request headers the service reads itself.

use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

/// Reads `grpc-timeout` (an ASCII integer of at most 8 digits and a unit: H, M, S, m, u, n).
pub fn grpc_timeout(metadata: &MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let bad = || {
        super::status::refusal(
            tonic::Code::InvalidArgument,
            "MALFORMED_DEADLINE",
            "grpc-timeout: malformed header",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    }))
}
