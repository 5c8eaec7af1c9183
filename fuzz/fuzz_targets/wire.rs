//! What a peer sends: p2p frames (whole and chunked) and sync envelopes applied to a library
//! under each access level. A bad message is an error and changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::{wire, Access, Library, PeerSync, SyncEnvelope};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_frame(data);
    let _ = wire::decode::<wire::BlobRequest>(data);
    let _ = wire::decode::<wire::BlobResponse>(data);
    let mut reader = wire::FrameReader::default();
    for chunk in data.chunks(7) {
        reader.push(chunk);
        while let Ok(Some(_)) = reader.next_frame() {}
    }
    if let Ok(env) = SyncEnvelope::decode(data) {
        for access in [Access::Read, Access::Write] {
            let mut lib = Library::new(&[7; 16]);
            let mut peer = PeerSync::default();
            let _ = peer.receive(&mut lib, env.docs.clone(), |_| access);
        }
    }
});
