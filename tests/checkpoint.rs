//! Checkpoints in file mode, through the binary: SIGKILL at random points
//! and SIGTERM mid-stream, each followed by a restart, give exactly the
//! output of an uninterrupted run (nothing lost, nothing counted or
//! written twice); alert state survives a restart; a damaged,
//! incompatible or mismatched checkpoint is refused with an error naming
//! it and the way out (`--fresh`).

mod common;

use common::*;
use salespulse::checkpoint::Checkpoint;
use salespulse::demo::generator::{GenConfig, Generator};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

/// `n` generated events from 2026-01-01, `per_day` a day, with a bad
/// line every 20,000 (the last event must stay in the past).
fn input(dir: &Path, n: usize, per_day: u32) -> PathBuf {
    let p = dir.join("events.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let g = Generator::new(GenConfig {
        seed: 5,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: per_day,
        reps: 8,
    });
    for (i, e) in g.take(n).enumerate() {
        if i % 20_000 == 7 {
            writeln!(f, "{{\"broken\": {i}").unwrap();
        }
        writeln!(f, "{}", salespulse::decode::json::encode(&e)).unwrap();
    }
    p
}

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("SALESPULSE_CHECKPOINT__INTERVAL", "100ms")
        .stdout(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    cmd(dir, args).stderr(Stdio::piped()).output().unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Output and dead letters of an uninterrupted run without checkpoints.
fn reference(dir: &Path, input: &Path) -> (Vec<u8>, Vec<u8>) {
    let ref_dir = dir.join("ref");
    std::fs::create_dir_all(&ref_dir).unwrap();
    let o = run(
        &ref_dir,
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "out.jsonl",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        read(&ref_dir.join("out.jsonl")),
        read(&ref_dir.join("salespulse-dlq.jsonl")),
    )
}

/// `run` on `input` with records to out.jsonl and checkpoints to state.ckpt.
fn checkpointed(input: &Path) -> [&str; 7] {
    [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "out.jsonl",
        "--checkpoint",
        "state.ckpt",
    ]
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits until the checkpoint file exists and has been rewritten at
/// least `rewrites` times more (or the run ended).
fn wait_for_checkpoints(p: &Path, child: &mut Child, rewrites: u32) {
    let t0 = Instant::now();
    let (mut last, mut seen) = (None, 0);
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if let Ok(m) = std::fs::metadata(p) {
            let t = m.modified().unwrap();
            if last.is_some_and(|l| t > l) {
                seen += 1;
                if seen >= rewrites {
                    return;
                }
            }
            if last.is_none_or(|l| t > l) {
                last = Some(t);
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_at_random_points_then_restart_gives_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough (about 2 s on a fast machine) for several kills to
    // land before the end.
    let input = input(tmp.path(), 500_000, 4000);
    let (want_out, want_dlq) = reference(tmp.path(), &input);
    let args = checkpointed(&input);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = cmd(tmp.path(), &args)
            .env("SALESPULSE_CHECKPOINT__INTERVAL", "50ms")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A random point of the run, counted in checkpoints (every
        // 50 ms) rather than in time: a restarted run has only the rest
        // of the input to read, a fraction of a second on a fast
        // machine, so a delay in time would often come after its end.
        wait_for_checkpoints(&tmp.path().join("state.ckpt"), &mut child, rng.u32(1..=2));
        std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
        if child.try_wait().unwrap().is_none() {
            signal(&child, "-KILL");
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= 2,
        "only {kills} kills landed mid-stream (seed {seed})"
    );
    let o = run(tmp.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("state restored"),
        "the last run restored a checkpoint"
    );
    assert!(
        read(&tmp.path().join("out.jsonl")) == want_out,
        "records after {kills} SIGKILLs differ from the uninterrupted run (seed {seed})"
    );
    assert!(
        read(&tmp.path().join("salespulse-dlq.jsonl")) == want_dlq,
        "dead letters after {kills} SIGKILLs differ (seed {seed})"
    );
}

#[test]
fn sigterm_mid_stream_checkpoints_and_exits_0_and_the_restart_completes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 200_000, 1500);
    let (want_out, want_dlq) = reference(tmp.path(), &input);
    let args = checkpointed(&input);
    let mut child = cmd(tmp.path(), &args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoints(&tmp.path().join("state.ckpt"), &mut child, 1);
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("stop signal received"),
        "stopped mid-stream: {log}"
    );
    let c = Checkpoint::read(&tmp.path().join("state.ckpt"))
        .unwrap()
        .unwrap();
    let salespulse::checkpoint::InputPosition::File { messages, .. } = c.input else {
        panic!("{:?}", c.input)
    };
    assert!(messages > 0 && messages < 200_010, "stopped at {messages}");
    assert!(read(&tmp.path().join("out.jsonl")).len() < want_out.len());

    let o = run(tmp.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(read(&tmp.path().join("out.jsonl")) == want_out);
    assert!(read(&tmp.path().join("salespulse-dlq.jsonl")) == want_dlq);
}

/// Checkpoints pause the run for as long as they take, and that grows
/// with the state: asked for one every millisecond, a run spaces them so
/// that they take at most about a twentieth of its time
/// (`checkpoint::next_after`), and the output stays that of a run without
/// checkpoints.
#[test]
fn checkpoints_asked_too_often_take_a_bounded_share_of_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 200_000, 1500);
    let (want_out, _) = reference(tmp.path(), &input);
    let t0 = Instant::now();
    let o = cmd(tmp.path(), &checkpointed(&input))
        .env("SALESPULSE_CHECKPOINT__INTERVAL", "1ms")
        .env("RUST_LOG", "salespulse=debug")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let took: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("checkpoint written"))
        .map(|l| {
            let v = l.split("took_ms=").nth(1).expect("took_ms in the log line");
            v.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    // The periodic ones; the last is the end of the input's.
    let (_, periodic) = took.split_last().expect("checkpoints written");
    assert!(
        periodic.len() >= 2,
        "at least two checkpoints while reading: {took:?}"
    );
    let share = periodic.iter().sum::<f64>() / wall_ms;
    // 1/20 by construction; without the spacing it was most of the run.
    assert!(
        share < 0.25,
        "checkpoints took {share:.2} of the run ({took:?} ms of {wall_ms:.0} ms)"
    );
    assert!(read(&tmp.path().join("out.jsonl")) == want_out);
}

fn small_input(dir: &Path) -> PathBuf {
    let p = dir.join("small.jsonl");
    let lines: Vec<String> = Generator::new(GenConfig {
        seed: 1,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: 500,
        reps: 4,
    })
    .take(3000)
    .map(|e| salespulse::decode::json::encode(&e))
    .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn a_damaged_or_incompatible_checkpoint_is_refused_by_name_and_fresh_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = small_input(d);
    let args = checkpointed(&input);
    assert!(run(d, &args).status.success());
    let want = read(&d.join("out.jsonl"));
    let ckpt = d.join("state.ckpt");
    let good = read(&ckpt);

    // One flipped byte in the state.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&ckpt, &bad).unwrap();
    let o = run(d, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("checkpoint state.ckpt is not a salespulse checkpoint or is damaged (checksum mismatch)"), "{err}");
    assert!(err.contains("--fresh"), "{err}");

    // Truncated, and not a checkpoint at all.
    std::fs::write(&ckpt, &good[..good.len() - 10]).unwrap();
    let err = String::from_utf8_lossy(&run(d, &args).stderr).to_string();
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&ckpt, b"{\"hello\": 1}\n").unwrap();
    let err = String::from_utf8_lossy(&run(d, &args).stderr).to_string();
    assert!(err.contains("no salespulse checkpoint header"), "{err}");

    // Written by a salespulse of format 9 (before the forecast's history
    // and the customers' orders were part of the state).
    let mut old = good.clone();
    old[7] = 9;
    std::fs::write(&ckpt, &old).unwrap();
    let err = String::from_utf8_lossy(&run(d, &args).stderr).to_string();
    assert!(
        err.contains("format version 9 is not the version 11 this salespulse reads"),
        "{err}"
    );
    assert!(err.contains("--fresh"), "{err}");

    // Written under another time zone: the windows would not fit.
    std::fs::write(&ckpt, &good).unwrap();
    let o = cmd(d, &args)
        .env("SALESPULSE_TIME__ZONE", "Europe/Paris")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("was written with time.zone = UTC, the configuration now says Europe/Paris"),
        "{err}"
    );

    // Taken reading another input.
    let other = d.join("other.jsonl");
    std::fs::copy(&input, &other).unwrap();
    let o = run(
        d,
        &[
            "run",
            "--input",
            other.to_str().unwrap(),
            "--checkpoint",
            "state.ckpt",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("the checkpoint was taken reading File"),
        "{err}"
    );

    // --fresh moves the bad file aside and replays from the start.
    std::fs::write(&ckpt, &bad).unwrap();
    let mut fresh = args.to_vec();
    fresh.push("--fresh");
    let o = run(d, &fresh);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&d.join("state.ckpt.rejected")), bad);
    assert!(read(&d.join("out.jsonl")) == want);
}

#[test]
fn alert_state_survives_a_restart_neither_refiring_nor_forgetting() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("cfg.toml"),
        format!(
            "{DAY_WINDOWS}\n[input]\nbatch_size = 1\n{CONVERSION_LOW}\n[[alerts.routes]]\nname = \"file\"\nkind = \"file\"\npath = \"alerts.jsonl\"\n"
        ),
    )
    .unwrap();
    let days = conversion_days(
        "c",
        "2026-03-01T00:00:00Z",
        &[
            (20, 6),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 6),
            (20, 6),
        ],
    );
    let args = [
        "run",
        "--input",
        "-",
        "--config",
        "cfg.toml",
        "--checkpoint",
        "state.ckpt",
    ];
    let states = || -> Vec<String> {
        std::fs::read_to_string(d.join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    // First run: the low days, up to the firing; then SIGTERM.
    let cut = days
        .iter()
        .position(|l| String::from_utf8_lossy(l).contains("c-d4-"))
        .unwrap();
    let mut child = cmd(d, &args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in &days[..cut] {
        stdin.write_all(l).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    stdin.flush().unwrap();
    let t0 = Instant::now();
    while states().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no firing notification"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(states(), ["firing"]);

    // Second run: the same stream again from its start (stdin cannot seek:
    // the lines the checkpoint holds are skipped); the low days go on, then recover.
    let mut child = cmd(d, &args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in &days {
        stdin.write_all(l).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("state restored"));
    assert_eq!(
        states(),
        ["firing", "resolved"],
        "not fired again, and resolved after the restart"
    );
}
