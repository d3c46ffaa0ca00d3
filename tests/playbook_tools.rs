//! The playbook authoring tools: `selfheal playbook check | test | docs`.

mod common;

use common::selfheal;

#[test]
fn check_passes_the_library_and_names_every_problem_with_its_line() {
    let (ok, out, err) = selfheal(&["playbook", "check"]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("12 playbook(s) OK"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rhai");
    std::fs::write(
        &bad,
        r#"fn meta() { #{ handles: ["bad_deploy"], risk: "low", approval: "auto" } }
fn plan(incident) {
    // traffic::nothing(1) in a comment is not a call
    let note = "service::restart(\"in a string\")"; /* storage::wipe() in a block comment */
    traffic::shfit(incident.target, "bank-b", 0.5);
    service::restart(incident.at);
    verify::cleared(60);
    storage::wipe();
    system("reboot");
}
"#,
    )
    .unwrap();
    let broken = dir.path().join("broken.rhai");
    std::fs::write(
        &broken,
        "fn meta() { #{ handles: [] }\nfn plan(i) {\n  let x = ;\n}\n",
    )
    .unwrap();
    let (ok, out, _) = selfheal(&[
        "playbook",
        "check",
        bad.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    assert!(!ok);
    let lines: Vec<&str> = out.lines().collect();
    let b = bad.display().to_string();
    assert!(
        lines.iter().any(|l| l
            .starts_with(&format!("{b}:5: unknown host function traffic::shfit"))
            && l.contains("traffic::shift")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{b}:6: service::restart called with 1 argument(s)"
        ))),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{b}:8: unknown host function storage::wipe (there is no host module `storage`)"
        ))),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{b}:9: unknown function system: neither a host function"
        ))),
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(&b)).count(),
        4,
        "nothing flagged in comments or strings: {out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{}:", broken.display()))),
        "{out}"
    );

    // Verification lints: an action nothing verifies, a verify that can
    // never run.
    let unverified = dir.path().join("unverified.rhai");
    std::fs::write(
        &unverified,
        r#"fn meta() { #{ handles: ["bad_deploy"], risk: "low", approval: "auto" } }
fn plan(incident) {
    if incident.target == "" {
        incident::escalate("nothing to roll back");
        verify::cleared(10);
    }
    service::rollback(incident.target);
}
"#,
    )
    .unwrap();
    let (ok, out, _) = selfheal(&["playbook", "check", unverified.to_str().unwrap()]);
    let u = unverified.display().to_string();
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{u}:5: verify::cleared can never run: incident::escalate (line 4) ends the plan"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{u}:7: service::rollback is the last action and nothing verifies it"
        )),
        "{out}"
    );
}

#[test]
fn every_library_playbook_passes_its_fixtures_and_a_wrong_one_fails() {
    let (ok, out, err) = selfheal(&["playbook", "test"]);
    assert!(ok, "{out}{err}");
    assert!(
        !out.contains("no fixture"),
        "every playbook has a fixture: {out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("pass playbooks/"))
            .count(),
        12,
        "{out}"
    );
    // Each auto playbook is rehearsed on the simulator scenario of its
    // fault class and heals it; the approval one is not run.
    let sims: Vec<&str> = out.lines().filter(|l| l.starts_with("pass sim ")).collect();
    assert_eq!(sims.len(), 13, "{out}");
    for l in &sims {
        assert!(l.contains("cure 1/1") && l.contains("0 harmful"), "{l}");
    }
    assert!(
        out.contains("skip sim slow_database (degrade_non_critical)"),
        "{out}"
    );
    assert!(
        out.contains("on failure, undo: act restore item-9001"),
        "the undo of a revert playbook is shown: {out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("wrong.toml");
    std::fs::write(
        &fx,
        r#"playbook = "rollback_bad_deploy"
expect = ["act restart payment-engine"]
[incident]
cause = "bad_deploy"
target = "payment-engine"
"#,
    )
    .unwrap();
    let (ok, out, _) = selfheal(&["playbook", "test", "--no-sim", fx.to_str().unwrap()]);
    assert!(
        !ok && out.contains("FAIL") && out.contains("act rollback payment-engine"),
        "{out}"
    );
    std::fs::write(&fx, "playbook = \"rollback_bad_deploy\"\nexpect = [\"x\"]\n[incident]\ncause = \"hot_item\"\ntarget = \"x\"\n").unwrap();
    let (ok, out, _) = selfheal(&["playbook", "test", "--no-sim", fx.to_str().unwrap()]);
    assert!(
        !ok && out.contains("does not handle cause hot_item"),
        "{out}"
    );
}

#[test]
fn the_committed_api_reference_is_what_the_code_generates() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("api.md");
    let defs = dir.path().join("api.d.rhai");
    let (ok, out, err) = selfheal(&[
        "playbook",
        "docs",
        "--out",
        md.to_str().unwrap(),
        "--defs",
        defs.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (generated, committed) in [
        (md, "docs/playbook-api.md"),
        (defs, "docs/playbook-api.d.rhai"),
    ] {
        assert_eq!(
            std::fs::read_to_string(generated).unwrap(),
            std::fs::read_to_string(root.join(committed)).unwrap(),
            "{committed} is stale: run `selfheal playbook docs`"
        );
    }
}
