//! Generated protobuf types and gRPC stubs of the marketbridge services.
//!
//! Architecture invariant: this crate has no I/O and no logic beyond small
//! conversions; it is what the `.proto` files say.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod codec;

pub mod common {
    pub mod v1 {
        tonic::include_proto!("marketbridge.common.v1");
    }
}

pub mod account {
    pub mod v1 {
        tonic::include_proto!("marketbridge.account.v1");
    }
}

pub mod provisioning {
    pub mod v1 {
        tonic::include_proto!("marketbridge.provisioning.v1");
    }
}

pub mod billing {
    pub mod v1 {
        tonic::include_proto!("marketbridge.billing.v1");
    }
}

pub mod plugin {
    pub mod v1 {
        tonic::include_proto!("marketbridge.plugin.v1");
    }
}

/// Encoded descriptors of every marketbridge proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("marketbridge_descriptor");

pub use prost_types;

mod convert;
