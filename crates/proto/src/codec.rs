//! The protobuf codec of every marketbridge service and client.
//!
//! It is prost's codec with one difference: a message that cannot be decoded
//! (truncated, a wrong wire type, or nested deeper than prost's recursion
//! limit of 100) is the caller's fault and answers `INVALID_ARGUMENT`, not
//! `INTERNAL`. Without it a direct gRPC caller sending metadata nested about
//! 35 levels deep would get `INTERNAL` before the services' own limits run.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `application/grpc+proto` through prost, with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self { types: PhantomData }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder { types: PhantomData }
    }
}

/// Decodes one `U`; see the module documentation for how failures answer.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U> {
    types: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!("the message could not be decoded: {error}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
