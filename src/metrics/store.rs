//! Store operations, by backend, table, operation and outcome.

use super::*;

/// The store operations an instrumented table counts (the `operation`
/// label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    Get,
    Put,
    Take,
    Delete,
    CompareAndSwap,
    Touch,
    Purge,
    Count,
    SoonestExpiring,
    Scan,
    PutIndexed,
    IndexScan,
    IndexRemove,
    IndexAdd,
}

impl StoreOperation {
    pub const ALL: [StoreOperation; 14] = [
        StoreOperation::Get,
        StoreOperation::Put,
        StoreOperation::Take,
        StoreOperation::Delete,
        StoreOperation::CompareAndSwap,
        StoreOperation::Touch,
        StoreOperation::Purge,
        StoreOperation::Count,
        StoreOperation::SoonestExpiring,
        StoreOperation::Scan,
        StoreOperation::PutIndexed,
        StoreOperation::IndexScan,
        StoreOperation::IndexRemove,
        StoreOperation::IndexAdd,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Get => "get",
            StoreOperation::Put => "put",
            StoreOperation::Take => "take",
            StoreOperation::Delete => "delete",
            StoreOperation::CompareAndSwap => "cas",
            StoreOperation::Touch => "touch",
            StoreOperation::Purge => "purge",
            StoreOperation::Count => "count",
            StoreOperation::SoonestExpiring => "soonest_expiring",
            StoreOperation::Scan => "scan",
            StoreOperation::PutIndexed => "put_indexed",
            StoreOperation::IndexScan => "index_scan",
            StoreOperation::IndexRemove => "index_remove",
            StoreOperation::IndexAdd => "index_add",
        }
    }
}

/// One operation on one table: its counters and (for backends that do
/// I/O) its latency histogram, resolved once.
#[derive(Clone)]
pub struct StoreOperationMetrics {
    pub ok: IntCounter,
    pub error: IntCounter,
    pub duration: Option<Histogram>,
}

/// Store operations: the families, from which each table resolves its own
/// children ([`Metrics::store_table`]).
pub(super) struct StoreMetrics {
    pub(super) operations: IntCounterVec,
    pub(super) duration: HistogramVec,
}
