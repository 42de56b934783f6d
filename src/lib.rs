//! The whole marketbridge set in one process: the three services and the
//! gateway, each on its own listener, talking gRPC over loopback exactly as
//! they do when deployed apart. `marketbridge up` runs it; the end-to-end
//! tests start it on port 0.

pub mod demo;
pub mod probe;
pub mod set;
