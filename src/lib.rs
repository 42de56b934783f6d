//! The whole marketbridge set in one process: the three services and the
//! gateway, each on its own listener, talking gRPC over loopback exactly as
//! they do when deployed apart. `marketbridge up` runs it; the end-to-end
//! tests start it on port 0. `marketbridge demo vercel` walks a whole
//! marketplace flow against it and the Vercel simulator.

pub mod demo;
pub mod probe;
pub mod set;
