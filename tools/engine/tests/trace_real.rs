//! Arm traces (`specblock trace-arms`) against real speculative decoding: what the trace says an arm
//! accepts at each position is what a real greedy run with that arm accepts there, so a policy replayed
//! over the trace meets the real acceptance process.

mod support;

use std::path::PathBuf;

use specblock::adapt::{Arm, Shape};
use specblock::drafter::{AnyDrafter, DrafterKind};
use specblock_engine::model::{Llama, WeightFormat};
use specblock_engine::speculate::speculative_generate;
use specblock_engine::tokenizer::Tokenizer;

fn committed(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/drafters"
    ))
    .join(name)
}

#[test]
fn a_trace_predicts_what_real_iterations_accept() {
    let Some(path) = support::model_path("trace_real") else {
        return;
    };
    let (loaded, gguf) = specblock_engine::load::load_gguf(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let m = Llama::new(loaded, WeightFormat::F32, 2).unwrap();
    let prompt = tok.encode(
        &tok.apply_chat_template(&[("user", "List the days of the week.")], true),
        true,
    );
    for (name, kind, shape) in [
        (
            "specblock",
            DrafterKind::SpecBlock,
            Shape::SpecBlock {
                budget: 4,
                max_seeds: 0,
            },
        ),
        (
            "eagle3",
            DrafterKind::Eagle3,
            Shape::Eagle3 {
                budget: 6,
                depth: 3,
                top_k: 2,
            },
        ),
    ] {
        let d = AnyDrafter::load_dir(&committed(name), 2).unwrap();
        assert_eq!(d.kind(), kind);
        let arms = [Arm::new(Shape::Plain), Arm::new(shape)];
        let rec = specblock_engine::trace::record(&m, &d, &arms, &prompt, 40, tok.eos()).unwrap();
        assert!(rec.trace.arms[0].is_none());
        let t = rec.trace.arms[1].as_ref().unwrap();
        assert_eq!(t.accepted.len(), rec.answer.len() - 1);

        // The real run with the same fixed arm.
        let mut spec = d
            .new_speculator(512, &arms[1..], Default::default())
            .unwrap();
        let mut spy = specblock_engine::trace::Observed::new(&mut spec);
        let greedy = specblock_engine::decode::GREEDY;
        let st =
            speculative_generate(&m, &mut spy, &prompt, 40, &greedy, 0, tok.eos(), |_| {}).unwrap();
        assert_eq!(st.tokens, rec.answer, "{name}: the same greedy answer");
        let mut p = 1;
        let mut agree = 0;
        for &a in &spy.accepted {
            agree += usize::from(t.accepted[p - 1] as usize == a);
            p += a + 1;
        }
        let n = spy.accepted.len();
        eprintln!("{name}: {agree} of {n} iterations as traced");
        assert!(n >= 8 && st.accepted > 0, "{name}: drafts accepted");
        // Features from one causal prefill and from tree verification differ in the last bits, which
        // may flip a near-tie of the drafter; all but a few iterations must agree.
        assert!(
            agree * 10 >= n * 9,
            "{name}: {agree} of {n} iterations as traced"
        );
    }
}
