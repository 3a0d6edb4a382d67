//! Erase calls run to their end, and their receipts read.

use super::*;

/// Runs one Erase call to its end: the receipt, or the status it ended with.
pub async fn erase_receipt(
    client: &mut DsrConnectorServiceClient<Channel>,
    request: dsr_connector::pb::EraseRequest,
) -> Result<dsr_connector::pb::ErasureReceipt, tonic::Status> {
    erase_events(client, request)
        .await
        .map(|(_, receipt)| receipt)
}

/// Runs one Erase call to its end: its table messages and receipt, or its status.
pub async fn erase_events(
    client: &mut DsrConnectorServiceClient<Channel>,
    request: impl tonic::IntoRequest<dsr_connector::pb::EraseRequest>,
) -> Result<
    (
        Vec<dsr_connector::pb::TableErasure>,
        dsr_connector::pb::ErasureReceipt,
    ),
    tonic::Status,
> {
    use dsr_connector::pb::erase_response::Event;
    let mut stream = client.erase(request).await?.into_inner();
    let mut tables = Vec::new();
    let mut receipt = None;
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Table(t)) => tables.push(t),
            Some(Event::Receipt(r)) => receipt = Some(r),
            None => panic!("a message without an event"),
        }
    }
    Ok((tables, receipt.expect("a receipt ends the stream")))
}

/// The receipt's entry for table `name`.
pub fn erased_table<'a>(
    receipt: &'a dsr_connector::pb::ErasureReceipt,
    name: &str,
) -> &'a dsr_connector::pb::TableErasure {
    receipt
        .tables
        .iter()
        .find(|t| t.table == name)
        .unwrap_or_else(|| panic!("no {name} in {receipt:?}"))
}
