//! `SpecBlockSession::draft` against the independent Python tree growth (tools/train/specblock_tree.py via
//! tools/train/tree_golden.py): on the tiny drafter, after the golden prefill and commit, the default
//! policy's tree with budgets 90 and 20 must match the reference token for token, parent for parent.

use std::path::PathBuf;

use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession};
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures"
    ))
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.f32(name).unwrap_or_else(|e| panic!("{e}")).1
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    st.i64(name).unwrap_or_else(|e| panic!("{e}")).1
}

fn u32s(st: &SafeTensors, name: &str) -> Vec<u32> {
    i64s(st, name).iter().map(|&x| x as u32).collect()
}

#[test]
fn draft_tree_matches_the_python_reference() {
    let dir = fixtures().join("drafter_tiny");
    let d = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
    let embed = f32s(
        &SafeTensors::open(&dir.join("embed.safetensors")).unwrap(),
        "model.embed_tokens.weight",
    );
    let g = SafeTensors::open(&fixtures().join("drafter_golden.safetensors")).unwrap();
    let want = SafeTensors::open(&fixtures().join("drafter_tree_golden.safetensors")).unwrap();
    let root = u32s(&want, "root")[0];

    for budget in [90u32, 20] {
        let policy = DraftPolicy {
            budget,
            ..Default::default()
        };
        let mut s = SpecBlockSession::new(&d, 64, policy).unwrap();
        let mut tree = DraftTree::new(TreeParams {
            max_nodes: 2048,
            max_depth: 16,
        })
        .unwrap();
        // Training protocol: entry t is (features[t], tokens[t + 1]) at base t + 1, so the golden
        // prefill's 5 entries need one leading token that the drafter never reads.
        let mut tokens = vec![0u32];
        tokens.extend(u32s(&g, "prefill.tokens"));
        s.prefill(&embed, &f32s(&g, "prefill.features"), &tokens)
            .unwrap();
        s.draft(&embed, &mut tree).unwrap();
        // Golden commit: entries (features[i], chain[i]) at bases 6..8, chain = accepted + [bonus].
        let chain = u32s(&g, "commit.tokens");
        let (bonus, accepted) = chain.split_last().unwrap();
        s.commit(&embed, accepted, *bonus, &f32s(&g, "commit.features"))
            .unwrap();
        assert_eq!(s.root(), Some(root));
        assert_eq!(s.context_entries(), 8);

        s.draft(&embed, &mut tree).unwrap();
        let tokens: Vec<i64> = tree.tokens().iter().map(|&t| t as i64).collect();
        let parents: Vec<i64> = tree.parents().iter().map(|&p| p as i64).collect();
        assert_eq!(
            tokens,
            i64s(&want, &format!("tree{budget}.tokens")),
            "budget {budget}: tokens"
        );
        assert_eq!(
            parents,
            i64s(&want, &format!("tree{budget}.parents")),
            "budget {budget}: parents"
        );
    }
}
