//! Tests of the multi-node harness: the router between node processes and the partition shapes.

#[allow(
    dead_code,
    reason = "shared with the lone-node tests, the soak test and the node bench"
)]
mod workload;

// Not declared in `workload/mod.rs`, so only this test binary runs these unit tests.
#[path = "workload/partition_tests.rs"]
mod partition_tests;
#[path = "workload/router_tests.rs"]
mod router_tests;
