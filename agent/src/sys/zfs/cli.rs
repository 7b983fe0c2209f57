//! The real [`Zfs`]: runs `zpool` and `zfs`, machine-readable (`-H -p`) wherever they offer it.

use super::{
    classify_import_error, list_columns, parse_list, parse_scan, BootReads, Child, ImportError,
    Importable, Listing, Zfs,
};
use crate::sys::run::Cmd;
use anyhow::Context;
use std::time::Duration;

/// How long a scan for importable pools (`zpool import` without a pool: labels only) may take
/// before it is killed and reported.
const SCAN_TIMEOUT: Duration = Duration::from_secs(180);

/// How long an import may take before it is killed and reported. An import is slow in honest
/// ways: ZFS visits every dataset's intent log and cleans up receives that a power cut
/// interrupted, one transaction group each (minutes on a pool of thousands of datasets on slow
/// disks), and a kill does not stop it inside the kernel. So the limit is generous, and the
/// console hears from the import every [`IMPORT_HEARTBEAT`] meanwhile.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A data pool's import is never cut short in practice: it runs after the switch of root, where
/// nothing waits for it but the services that use its data.
const DATA_IMPORT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How often a running import is reported on the console.
const IMPORT_HEARTBEAT: Duration = Duration::from_secs(30);

/// [`Zfs`] through the `zpool` and `zfs` programs.
#[derive(Clone, Debug)]
pub struct ZfsCli {
    zpool: String,
    zfs: String,
    /// Where imports look for disks (`zpool import -d`); `None` uses zpool's default search.
    search_dir: Option<String>,
}

impl Default for ZfsCli {
    fn default() -> Self {
        ZfsCli {
            zpool: "zpool".into(),
            zfs: "zfs".into(),
            search_dir: None,
        }
    }
}

/// The channel program of [`Zfs::children`]: for each dataset below `argv[1]`, a table of the
/// properties named by the further arguments that have a value (a property with none is nil in
/// Lua, and left out), keyed by the dataset's name.
const CHILDREN_PROGRAM: &str = "local a = ...\nlocal argv = a[\"argv\"]\nlocal out = {}\nfor c in zfs.list.children(argv[1]) do\n  local p = {}\n  for i = 2, #argv do\n    local v = zfs.get_prop(c, argv[i])\n    if v ~= nil then p[argv[i]] = tostring(v) end\n  end\n  out[c] = p\nend\nreturn out\n";

/// Reads `zfs program -j`'s answer to [`CHILDREN_PROGRAM`]:
/// `{"return": {"<name>": {"<prop>": "<value>", ...}, ...}}` (an empty table may come as `[]`).
pub fn parse_children(out: &str) -> anyhow::Result<Vec<Child>> {
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| anyhow::anyhow!("the channel program's answer is not JSON: {e}"))?;
    let ret = v
        .get("return")
        .ok_or_else(|| anyhow::anyhow!("the channel program returned nothing"))?;
    let empty = |x: &serde_json::Value| x.as_array().is_some_and(|a| a.is_empty());
    if empty(ret) {
        return Ok(Vec::new());
    }
    let map = ret
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("the channel program returned {ret}"))?;
    let mut children = Vec::new();
    for (name, props) in map {
        let mut p = std::collections::BTreeMap::new();
        if !empty(props) {
            let obj = props.as_object().ok_or_else(|| {
                anyhow::anyhow!("the channel program returned {props} for {name}")
            })?;
            for (k, v) in obj {
                let v = v.as_str().ok_or_else(|| {
                    anyhow::anyhow!("the channel program returned {v} as {k} of {name}")
                })?;
                p.insert(k.clone(), v.to_owned());
            }
        }
        children.push(Child {
            name: name.clone(),
            props: p,
        });
    }
    children.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(children)
}

impl ZfsCli {
    /// `zfs list` of `datasets`, with their descendants when `recursive`.
    fn listing(&self, datasets: &[&str], recursive: bool) -> anyhow::Result<Listing> {
        let cmd = self
            .zfs()
            .args([
                "list",
                "-H",
                "-p",
                "-t",
                "filesystem",
                "-o",
                &list_columns(),
            ])
            .args(recursive.then_some("-r"))
            .args(datasets.iter().copied());
        let out = cmd.output()?;
        // zfs lists the others when some do not exist, and says so for each of those.
        let only_missing = || {
            out.stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| l.contains("dataset does not exist"))
        };
        if out.success() || only_missing() {
            return Ok(parse_list(&out.stdout));
        }
        let out = cmd
            .check(out)
            .with_context(|| format!("listing datasets below {}", datasets.join(", ")))?;
        Ok(parse_list(&out.stdout))
    }

    /// Runs the programs at these paths (the initramfs has no PATH).
    pub fn with_programs(mut self, zpool: &str, zfs: &str) -> ZfsCli {
        self.zpool = zpool.to_owned();
        self.zfs = zfs.to_owned();
        self
    }

    /// Looks for pool disks in `dir` only (the initramfs has no udev links: `/dev`).
    pub fn with_search_dir(mut self, dir: &str) -> ZfsCli {
        self.search_dir = Some(dir.to_owned());
        self
    }

    fn zpool(&self) -> Cmd {
        // Without udev, libzfs would wait up to 30 s for device links that never come.
        Cmd::new(&self.zpool).env("ZPOOL_IMPORT_UDEV_TIMEOUT_MS", "0")
    }

    fn zfs(&self) -> Cmd {
        Cmd::new(&self.zfs)
    }

    fn search_args(&self) -> Vec<String> {
        match &self.search_dir {
            Some(d) => vec!["-d".into(), d.clone()],
            None => vec![],
        }
    }
}

/// The lines of two tab-separated fields as pairs.
fn tab_pairs(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn kv(props: &[(&str, &str)]) -> Vec<String> {
    props.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Where the zfs module shows each imported pool as a directory with a `state` file.
const POOL_KSTATS: &str = "/proc/spl/kstat/zfs";

/// The imported pools as the zfs module shows them in [`POOL_KSTATS`] (no process to start, which
/// counts on the boot path); `None` when that directory cannot be read.
fn pools_from_kstats(dir: &std::path::Path) -> Option<Vec<String>> {
    let mut pools: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("state").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    pools.sort();
    Some(pools)
}

impl Zfs for ZfsCli {
    fn imported_pools(&self) -> anyhow::Result<Vec<String>> {
        if let Some(pools) = pools_from_kstats(std::path::Path::new(POOL_KSTATS)) {
            return Ok(pools);
        }
        let out = self
            .zpool()
            .args(["list", "-H", "-o", "name"])
            .run()
            .context("listing imported pools")?;
        Ok(out
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn scan(&self) -> anyhow::Result<Vec<Importable>> {
        let out = self
            .zpool()
            .arg("import")
            .args(self.search_args())
            .timeout(SCAN_TIMEOUT)
            .output()?;
        // Exit status 1 with "no pools available to import" is an empty scan, not an error.
        Ok(parse_scan(&out.stdout))
    }

    fn import(&self, pool: &str) -> anyhow::Result<Result<(), ImportError>> {
        let cmd = self
            .zpool()
            .args(["import", "-N", "-o", "cachefile=none"])
            .args(self.search_args())
            .arg(pool)
            .timeout(IMPORT_TIMEOUT)
            .heartbeat(
                IMPORT_HEARTBEAT,
                format!(
                    "importing pool {pool} (ZFS checks each dataset's intent log and cleans up interrupted receives; large pools take minutes)"
                ),
            );
        let out = cmd.output()?;
        if out.success() {
            return Ok(Ok(()));
        }
        if out.timed_out {
            // A killed `zpool import` may have imported the pool in the kernel all the same.
            if self.imported_pools()?.iter().any(|p| p == pool) {
                log::warn!(
                    "`zpool import {pool}` was killed at its limit, but the pool is imported"
                );
                return Ok(Ok(()));
            }
            return Ok(Err(ImportError::Other(
                cmd.check(out).unwrap_err().to_string(),
            )));
        }
        Ok(Err(classify_import_error(&out.stderr)))
    }

    fn import_data(&self, pool: &str, mount: bool) -> anyhow::Result<Result<(), ImportError>> {
        let mut cmd = self.zpool().args(["import", "-o", "cachefile=none"]);
        if !mount {
            cmd = cmd.arg("-N");
        }
        let cmd = cmd
            .args(self.search_args())
            .arg(pool)
            .timeout(DATA_IMPORT_TIMEOUT)
            .heartbeat(
                IMPORT_HEARTBEAT,
                format!("importing data pool {pool} (ZFS visits each of its datasets)"),
            );
        let out = cmd.output()?;
        if out.success() {
            return Ok(Ok(()));
        }
        // `zpool import` fails when a dataset did not mount, with the pool imported.
        if self.imported_pools()?.iter().any(|p| p == pool) {
            log::warn!(
                "data pool {pool} is imported, but: {}",
                out.stderr.trim().replace('\n', "; ")
            );
            return Ok(Ok(()));
        }
        Ok(Err(classify_import_error(&out.stderr)))
    }

    fn export(&self, pool: &str) -> anyhow::Result<()> {
        self.zpool()
            .args(["export", pool])
            .run()
            .with_context(|| format!("exporting pool {pool}"))?;
        Ok(())
    }

    fn pool_prop(&self, pool: &str, prop: &str) -> anyhow::Result<Option<String>> {
        let out = self
            .zpool()
            .args(["get", "-H", "-p", "-o", "value", prop, pool])
            .run()
            .with_context(|| format!("reading property {prop} of pool {pool}"))?;
        let v = out.trim_end_matches('\n');
        Ok((v != "-" && !v.is_empty()).then(|| v.to_owned()))
    }

    fn set_pool_prop(&self, pool: &str, prop: &str, value: &str) -> anyhow::Result<()> {
        self.zpool()
            .args(["set", &format!("{prop}={value}"), pool])
            .run()
            .with_context(|| format!("setting {prop}={value} on pool {pool}"))?;
        Ok(())
    }

    fn list(&self, dataset: &str) -> anyhow::Result<Listing> {
        self.list_many(&[dataset])
    }

    fn list_many(&self, datasets: &[&str]) -> anyhow::Result<Listing> {
        self.listing(datasets, true)
    }

    fn list_exact(&self, datasets: &[&str]) -> anyhow::Result<Listing> {
        self.listing(datasets, false)
    }

    fn boot_reads(&self, exact: &[&str], pool: &str, prop: &str, subtrees: &[&str]) -> BootReads {
        std::thread::scope(|s| {
            let p = s.spawn(|| self.pool_prop(pool, prop));
            let t = (!subtrees.is_empty()).then(|| s.spawn(|| self.list_many(subtrees)));
            let exact = self.list_exact(exact);
            let join = |what: &str| anyhow::anyhow!("the thread reading {what} panicked");
            BootReads {
                exact,
                prop: p.join().unwrap_or_else(|_| Err(join(prop))),
                subtrees: t.map_or(Ok(Listing::default()), |t| {
                    t.join().unwrap_or_else(|_| Err(join("the subtrees")))
                }),
            }
        })
    }

    fn children(&self, dataset: &str, props: &[&str]) -> anyhow::Result<Vec<Child>> {
        let pool = dataset.split('/').next().unwrap_or(dataset);
        // Read-only (-n): no transaction group is waited for.
        let out = self
            .zfs()
            .args(["program", "-n", "-j", pool, "/proc/self/fd/0", dataset])
            .args(props.iter().copied())
            .input(CHILDREN_PROGRAM.as_bytes().to_vec())
            .run()
            .with_context(|| format!("listing the names below {dataset}"))?;
        parse_children(&out).with_context(|| format!("reading the names below {dataset}"))
    }

    fn create(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut cmd = self.zfs().arg("create");
        for p in kv(props) {
            cmd = cmd.arg("-o").arg(p);
        }
        cmd.arg(dataset)
            .run()
            .with_context(|| format!("creating dataset {dataset}"))?;
        Ok(())
    }

    fn set(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()> {
        self.zfs()
            .arg("set")
            .args(kv(props))
            .arg(dataset)
            .run()
            .with_context(|| format!("setting properties on {dataset}"))?;
        Ok(())
    }

    fn snapshot(&self, dataset: &str, snap: &str, recursive: bool) -> anyhow::Result<()> {
        let mut cmd = self.zfs().arg("snapshot");
        if recursive {
            cmd = cmd.arg("-r");
        }
        cmd.arg(format!("{dataset}@{snap}"))
            .run()
            .with_context(|| format!("snapshotting {dataset}@{snap}"))?;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.zfs()
            .args(["rename", from, to])
            .run()
            .with_context(|| format!("renaming {from} to {to}"))?;
        Ok(())
    }

    fn destroy(&self, dataset: &str, recursive: bool) -> anyhow::Result<()> {
        let mut cmd = self.zfs().arg("destroy");
        if recursive {
            cmd = cmd.arg("-r");
        }
        cmd.arg(dataset)
            .run()
            .with_context(|| format!("destroying {dataset}"))?;
        Ok(())
    }

    fn clone_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        props: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut cmd = self.zfs().arg("clone");
        for p in kv(props) {
            cmd = cmd.arg("-o").arg(p);
        }
        cmd.args([snapshot, target])
            .run()
            .with_context(|| format!("cloning {snapshot} as {target}"))?;
        Ok(())
    }

    fn promote(&self, dataset: &str) -> anyhow::Result<()> {
        self.zfs()
            .args(["promote", dataset])
            .run()
            .with_context(|| format!("promoting {dataset}"))?;
        Ok(())
    }

    fn snapshots(&self, dataset: &str) -> anyhow::Result<Vec<String>> {
        let cmd = self.zfs().args([
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-s",
            "createtxg",
            "-d",
            "1",
            dataset,
        ]);
        let Some(out) =
            stdout_unless_missing(&cmd, || format!("listing the snapshots of {dataset}"))?
        else {
            return Ok(Vec::new());
        };
        Ok(out
            .lines()
            .filter(|l| l.starts_with(&format!("{dataset}@")))
            .map(str::to_owned)
            .collect())
    }

    fn clones(&self, root: &str) -> anyhow::Result<Vec<(String, String)>> {
        let cmd = self.zfs().args([
            "get",
            "-H",
            "-p",
            "-r",
            "-t",
            "snapshot",
            "-o",
            "name,value",
            "clones",
            root,
        ]);
        let out = stdout_unless_missing(&cmd, || {
            format!("listing the clones of the snapshots below {root}")
        })?;
        Ok(out.map(|o| parse_clones(&o)).unwrap_or_default())
    }

    fn local_prop(&self, root: &str, prop: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .zfs()
            .args([
                "get",
                "-H",
                "-p",
                "-r",
                "-s",
                "local",
                "-t",
                "filesystem",
                "-o",
                "name,value",
                prop,
                root,
            ])
            .run()
            .with_context(|| format!("reading {prop} below {root}"))?;
        Ok(tab_pairs(&out))
    }

    fn local_props(&self, dataset: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .zfs()
            .args([
                "get",
                "-H",
                "-p",
                "-s",
                "local",
                "-o",
                "property,value",
                "all",
                dataset,
            ])
            .run()
            .with_context(|| format!("reading the local properties of {dataset}"))?;
        Ok(tab_pairs(&out))
    }

    fn vdev_devices(&self, pool: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .zpool()
            .args(["list", "-v", "-H", "-P", pool])
            .run()
            .with_context(|| format!("listing the devices of pool {pool}"))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                l.split('\t')
                    .find(|f| f.trim_start().starts_with("/dev/"))
                    .map(|f| f.trim().to_owned())
            })
            .collect())
    }

    fn send(&self, snapshot: &str, sink: &mut dyn std::io::Write) -> anyhow::Result<u64> {
        self.zfs()
            .args(["send", "-R", snapshot])
            .stream_out(sink, "sent")
            .with_context(|| format!("sending {snapshot}"))
    }

    fn receive(&self, dataset: &str, src: &mut dyn std::io::Read) -> anyhow::Result<u64> {
        self.zfs()
            .args(["receive", "-u", dataset])
            .stream_in(src, "received")
            .with_context(|| format!("receiving {dataset}"))
    }

    fn create_pool(&self, pool: &str, device: &str) -> anyhow::Result<()> {
        self.create_data_pool(pool, &[device.to_owned()])
    }

    fn create_data_pool(&self, pool: &str, devices: &[String]) -> anyhow::Result<()> {
        let mut cmd = self.zpool().args([
            "create",
            "-f",
            "-o",
            "ashift=12",
            "-o",
            "cachefile=none",
            "-O",
            "mountpoint=none",
            "-O",
            "compression=lz4",
            "-O",
            "atime=off",
            pool,
        ]);
        if devices.len() > 1 {
            cmd = cmd.arg("mirror");
        }
        cmd.args(devices)
            .run()
            .with_context(|| format!("creating pool {pool} on {}", devices.join(" ")))?;
        Ok(())
    }
}

/// Parses `zfs get -H -o name,value clones` of snapshots into (clone, origin) pairs. A
/// snapshot without clones has an empty value (or `-`); names hold no comma or tab.
fn parse_clones(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .flat_map(|(snap, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "-")
                .map(move |c| (c.to_owned(), snap.to_owned()))
        })
        .collect()
}

/// Runs `cmd` and returns what it printed, or `None` when ZFS says the dataset does not exist
/// (a listing of something that is gone is empty, not an error).
fn stdout_unless_missing(
    cmd: &Cmd,
    what: impl FnOnce() -> String,
) -> anyhow::Result<Option<String>> {
    let out = cmd.output()?;
    if !out.success() && out.stderr.contains("dataset does not exist") {
        return Ok(None);
    }
    Ok(Some(cmd.check(out).with_context(what)?.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boot path's three first reads run at once: three commands that take 0.4 s each end
    /// well before 1.2 s, each answer in its place.
    #[test]
    fn the_boot_reads_run_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\nsleep 0.4\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p.to_string_lossy().into_owned()
        };
        let z = ZfsCli {
            zpool: script("zpool", "echo tank/ROOT/v1"),
            zfs: script("zfs", "true"),
            search_dir: None,
        };
        let t = std::time::Instant::now();
        let r = z.boot_reads(&["tank/ROOT"], "tank", "bootfs", &["tank/ROOT/v1"]);
        let took = t.elapsed();
        assert_eq!(r.prop.unwrap().as_deref(), Some("tank/ROOT/v1"));
        assert!(r.exact.unwrap().datasets.is_empty());
        assert!(r.subtrees.unwrap().datasets.is_empty());
        assert!(took < std::time::Duration::from_millis(1000), "{took:?}");
    }
    /// `zfs program -n -j` as OpenZFS 2.1 answers the children program (captured in the
    /// guest), an empty answer, and what is not one.
    #[test]
    fn children_answers_are_read() {
        let out = "{\"return\":{\"tank/ROOT/b7\":{\"org.bootenv:cmdline\":\"console=ttyS0 quiet\"},\"tank/ROOT/b38\":[],\"tank/ROOT/v1\":{\"org.bootenv:label\":\"1.0\",\"org.bootenv:cmdline\":\"quiet\"}}}\n";
        let c = parse_children(out).unwrap();
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tank/ROOT/b38", "tank/ROOT/b7", "tank/ROOT/v1"]);
        assert!(c[0].props.is_empty());
        assert_eq!(c[1].props["org.bootenv:cmdline"], "console=ttyS0 quiet");
        assert_eq!(c[2].props.len(), 2);
        assert!(parse_children("{\"return\":{}}").unwrap().is_empty());
        assert!(parse_children("{\"return\":[]}").unwrap().is_empty());
        for bad in [
            "",
            "Channel program fully executed",
            "{\"return\":103}",
            "{}",
            "{\"return\":{\"tank/ROOT/v1\":1}}",
            "{\"return\":{\"tank/ROOT/v1\":{\"p\":1}}}",
        ] {
            assert!(parse_children(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_clones_of_snapshots() {
        let out = "tank/ROOT/v1@a\t\ntank/ROOT/v1@b\ttank/ROOT/v2,tank/x/y\ntank/ROOT/v1/c@b\t-\n";
        assert_eq!(
            parse_clones(out),
            vec![
                ("tank/ROOT/v2".to_string(), "tank/ROOT/v1@b".to_string()),
                ("tank/x/y".to_string(), "tank/ROOT/v1@b".to_string()),
            ]
        );
    }

    #[test]
    fn pools_are_the_kstat_directories_with_a_state() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tank")).unwrap();
        std::fs::write(d.path().join("tank/state"), "ONLINE\n").unwrap();
        std::fs::create_dir_all(d.path().join("fm")).unwrap();
        std::fs::write(d.path().join("arcstats"), "").unwrap();
        assert_eq!(pools_from_kstats(d.path()), Some(vec!["tank".to_string()]));
        assert_eq!(pools_from_kstats(&d.path().join("absent")), None);
    }
}
