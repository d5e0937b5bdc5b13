//! The messages of Pyroscope's push API (`push.v1`), as prost derive
//! structs. `push.proto` beside this file is the same definition in
//! protobuf's own language, for other tools (the contract tests decode what
//! flameprobe sends with Python's `protobuf` compiled from it).

/// `push.v1.PushRequest`: one request, several series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`: the labels of a series and its profiles.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.RawSample`: one profile, a (gzip-compressed) pprof.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// `ID` in the definition: a unique id of the profile (a UUID).
    #[prost(string, tag = "2")]
    pub id: String,
}
