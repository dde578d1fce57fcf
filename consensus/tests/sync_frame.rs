//! Block-sync chunks are served from Kura's records without decoding them (R19): the frame
//! built from the records must be exactly the encoding of the response message.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use kasane_consensus::message::sync_response_frame;
use kasane_consensus::Message;
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::codec::{self, CodecError};
use kasane_model::CommittedBlock;

fn blocks(count: usize) -> Vec<CommittedBlock> {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 0,
        transactions_per_block: 3,
        accounts: 8,
        validators: 4,
        seed: 11,
    })
    .unwrap();
    (0..count).map(|_| chain.next_block().unwrap().0).collect()
}

#[test]
fn a_frame_of_records_is_the_encoded_response() {
    // 130 blocks: the list length takes two bytes of postcard's varint.
    for count in [0, 1, 2, 127, 128, 130] {
        let blocks = blocks(count);
        let records: Vec<Vec<u8>> = blocks.iter().map(codec::encode).collect();
        let frame = sync_response_frame(&records).unwrap();
        let message = Message::BlockSyncResponse { blocks };
        assert_eq!(frame, codec::encode(&message), "{count} blocks");
        assert_eq!(codec::decode::<Message>(&frame).unwrap(), message);
    }
}

#[test]
fn a_record_of_another_version_or_empty_is_refused() {
    let mut record = codec::encode(&blocks(1)[0]);
    record[0] ^= 0x7f;
    assert!(matches!(
        sync_response_frame(&[record]),
        Err(CodecError::UnknownVersion { .. })
    ));
    assert!(matches!(
        sync_response_frame(&[Vec::new()]),
        Err(CodecError::Empty { .. })
    ));
}
