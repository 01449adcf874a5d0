//! `check` with a node down (issue 16): the node is reported once, with a
//! count of the files it could not survey, not once per file; `-v` lists
//! every file.

use std::time::Duration;

use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(240);
const PW: &str = "Crimson33";
const FILES: usize = 20;

#[test]
fn check_with_a_node_down_names_it_once_and_counts_its_files() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let d = c.dir.path().join("tree");
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..FILES {
            std::fs::write(d.join(format!("f{i:02}.txt")), format!("file {i}\n")).unwrap();
        }
        ok(&c.client(PW, &["put", "-r", d.to_str().unwrap()]));
        ok(&c.client(PW, &["check"]));

        c.kill(1);
        let o = c.client(PW, &["check"]);
        let (out, err) = (stdout(&o), stderr(&o));
        let all = format!("{out}{err}");
        assert_eq!(o.status.code(), Some(1), "check with DFS2 down:\n{all}");
        let naming: Vec<&str> = all.lines().filter(|l| l.contains("DFS2")).collect();
        assert_eq!(naming.len(), 1, "DFS2 named more than once:\n{all}");
        assert!(
            naming[0].contains(&format!("{FILES} files")),
            "no count of the files it could not check:\n{all}"
        );
        assert!(
            !all.lines().any(|l| l.contains("tree/f")),
            "per-file lines without -v:\n{all}"
        );

        // -v lists every file, as before.
        let o = c.client(PW, &["check", "-v"]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "check -v with DFS2 down:\n{out}");
        let per_file = out
            .lines()
            .filter(|l| l.starts_with("degraded tree/f") && l.contains("on DFS2"))
            .count();
        assert_eq!(per_file, FILES, "check -v:\n{out}");

        // The JSON keeps its fields and names the node.
        let o = c.client(PW, &["--json", "check"]);
        let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
        assert_eq!(j["files"], FILES, "{j}");
        assert_eq!(j["degraded"], FILES, "{j}");
        assert_eq!(j["nodes_not_surveyed"][0]["node"], "DFS2", "{j}");
        assert_eq!(j["nodes_not_surveyed"][0]["files"], FILES, "{j}");
    });
}
