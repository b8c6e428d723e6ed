//! The frame decoder's fuzz target (`codec::fuzz_frame`) on every input of its checked-in
//! corpus (`fuzz/corpus/frame`, seeds and what libFuzzer kept), and on random and mutated bytes:
//! the floor that runs with every `cargo test`. Coverage-guided runs: `fuzz/README.md`.

use std::path::PathBuf;

use proptest::prelude::*;

use embtune_protocol::codec::{self, fuzz_frame};
use embtune_protocol::wire::{ErrorKind, LookupHead, QueryHead, Request, Response, WireError};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame")
}

fn seeds() -> Vec<Vec<u8>> {
    let msgs: Vec<Vec<u8>> = vec![
        codec::encode_head(&Request::WorkerStats, 0).unwrap(),
        codec::encode_head(&Request::ListJobs, 0).unwrap(),
        codec::encode_head(
            &Request::Lookup(LookupHead {
                plan_id: 3,
                batch_size: 2,
                tables: vec![0, 1],
                offsets: 5,
                ids: 4,
                reply: embtune_protocol::wire::WireFormat::F16,
                client: 7,
            }),
            36,
        )
        .unwrap(),
        codec::encode_head(
            &Request::Query(QueryHead { spec_digest: 7, batch_size: 1, num_tables: 1, offsets: 2, ids: 3 }),
            20,
        )
        .unwrap(),
        codec::encode_head(&Request::GetJob { id: "job-20261203-120000-abcd".into() }, 0).unwrap(),
        codec::encode_head(&Response::Ack, 0).unwrap(),
        codec::encode_head(&Response::Error(WireError::new(ErrorKind::Overloaded, "busy")), 0).unwrap(),
        codec::encode_head(&Response::JobAccepted { id: "j".into() }, 0).unwrap(),
    ];
    msgs
}

/// Writes the seeds into the corpus: `cargo test -p embtune-protocol --test fuzz_frames --
/// --ignored write_seeds` (kept, so the corpus is reproducible).
#[test]
#[ignore]
fn write_seeds() {
    std::fs::create_dir_all(corpus()).unwrap();
    for (i, s) in seeds().iter().enumerate() {
        std::fs::write(corpus().join(format!("seed-{i:02}")), s).unwrap();
    }
}

#[test]
fn every_corpus_input_decodes_or_errs_without_panicking() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus()).expect("the checked-in corpus fuzz/corpus/frame") {
        fuzz_frame(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= seeds().len(), "the corpus lost its seeds ({n} inputs)");
    for s in seeds() {
        fuzz_frame(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_frame(&bytes);
    }

    /// Seeds with bytes flipped, cut or appended reach deeper than random bytes.
    #[test]
    fn mutated_seeds_never_panic(
        which in 0usize..8,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut s = seeds()[which].clone();
        for (i, b) in flips {
            let k = i.index(s.len());
            s[k] ^= b;
        }
        let keep = cut.index(s.len() + 1);
        s.truncate(keep.max(s.len() / 2));
        s.extend(tail);
        fuzz_frame(&s);
    }
}
