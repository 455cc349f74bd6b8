//! This machine's metrics from `/proc` and `statvfs`, with node_exporter's names, labels and
//! units (so its dashboards and rules work on what the agent sends): CPU seconds per mode,
//! load, memory (every `/proc/meminfo` field), filesystems, disk I/O, network, processes,
//! boot time and uname. Each reader parses text, so it is tested on fixed inputs; the
//! [`collect`] function reads the files of the running machine.

use std::path::Path;

/// One metric family: name, type, help, and its samples (labels, value).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: &'static str,
    pub help: &'static str,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    fn new(name: &str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name: name.to_string(),
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], v: f64) {
        self.samples.push((
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        ));
    }

    fn one(name: &str, kind: &'static str, help: &'static str, v: f64) -> Family {
        let mut f = Family::new(name, kind, help);
        f.add(&[], v);
        f
    }
}

/// `USER_HZ`: the unit of `/proc/stat`'s CPU times on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// `/proc/stat`: CPU seconds per CPU and mode, and the kernel counters beside them.
pub fn stat(text: &str) -> Vec<Family> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut cpu = Family::new(
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = Family::new(
        "node_cpu_guest_seconds_total",
        "counter",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let nums: Vec<f64> = f.filter_map(|x| x.parse().ok()).collect();
        if let Some(n) = key.strip_prefix("cpu").filter(|n| !n.is_empty()) {
            for (i, mode) in MODES.iter().enumerate() {
                if let Some(v) = nums.get(i) {
                    cpu.add(&[("cpu", n), ("mode", mode)], v / USER_HZ);
                }
            }
            for (i, mode) in [(8, "user"), (9, "nice")] {
                if let Some(v) = nums.get(i) {
                    guest.add(&[("cpu", n), ("mode", mode)], v / USER_HZ);
                }
            }
            continue;
        }
        let first = nums.first().copied().unwrap_or(0.0);
        match key {
            "intr" => out.push(Family::one(
                "node_intr_total",
                "counter",
                "Total number of interrupts serviced.",
                first,
            )),
            "ctxt" => out.push(Family::one(
                "node_context_switches_total",
                "counter",
                "Total number of context switches.",
                first,
            )),
            "btime" => out.push(Family::one(
                "node_boot_time_seconds",
                "gauge",
                "Node boot time, in unixtime.",
                first,
            )),
            "processes" => out.push(Family::one(
                "node_forks_total",
                "counter",
                "Total number of forks.",
                first,
            )),
            "procs_running" => out.push(Family::one(
                "node_procs_running",
                "gauge",
                "Number of processes in runnable state.",
                first,
            )),
            "procs_blocked" => out.push(Family::one(
                "node_procs_blocked",
                "gauge",
                "Number of processes blocked waiting for I/O to complete.",
                first,
            )),
            _ => {}
        }
    }
    out.insert(0, guest);
    out.insert(0, cpu);
    out
}

/// `/proc/loadavg`.
pub fn loadavg(text: &str) -> Vec<Family> {
    let f: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 3 {
        return Vec::new();
    }
    vec![
        Family::one("node_load1", "gauge", "1m load average.", f[0]),
        Family::one("node_load5", "gauge", "5m load average.", f[1]),
        Family::one("node_load15", "gauge", "15m load average.", f[2]),
    ]
}

/// `/proc/meminfo`: every field as `node_memory_<Field>_bytes` (kB scaled to bytes; `(` and
/// `)` become `_`), or without `_bytes` for the fields that count pages, as node_exporter
/// names them.
pub fn meminfo(text: &str) -> Vec<Family> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let Some(v) = f.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = key.trim().replace(['(', ')'], "_");
        let key = key.trim_end_matches('_');
        let (name, v) = match f.next() {
            Some("kB") => (format!("node_memory_{key}_bytes"), v * 1024.0),
            _ => (format!("node_memory_{key}"), v),
        };
        out.push(Family::one(
            &name,
            "gauge",
            "Memory information field from /proc/meminfo.",
            v,
        ));
    }
    out
}

/// Devices node_exporter leaves out of the disk statistics by default (partitions, RAM and
/// loop devices: `^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`).
fn ignored_disk(dev: &str) -> bool {
    let digits_end = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if ["ram", "loop", "fd"]
        .iter()
        .any(|p| dev.strip_prefix(p).is_some_and(digits_end))
    {
        return true;
    }
    // hda1, sda1, vda1, xvda1: a letter then digits.
    for p in ["hd", "sd", "vd", "xvd"] {
        if let Some(rest) = dev.strip_prefix(p) {
            let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            if letters > 0 && digits_end(&rest[letters..]) {
                return true;
            }
        }
    }
    // nvme0n1p1
    if let Some(rest) = dev.strip_prefix("nvme") {
        if let Some(p) = rest.rfind('p') {
            return rest[..p].contains('n') && digits_end(&rest[p + 1..]);
        }
    }
    false
}

/// `/proc/diskstats`: the I/O counters of each whole disk.
pub fn diskstats(text: &str) -> Vec<Family> {
    let mut fams = vec![
        Family::new(
            "node_disk_reads_completed_total",
            "counter",
            "The total number of reads completed successfully.",
        ),
        Family::new(
            "node_disk_read_bytes_total",
            "counter",
            "The total number of bytes read successfully.",
        ),
        Family::new(
            "node_disk_read_time_seconds_total",
            "counter",
            "The total number of seconds spent by all reads.",
        ),
        Family::new(
            "node_disk_writes_completed_total",
            "counter",
            "The total number of writes completed successfully.",
        ),
        Family::new(
            "node_disk_written_bytes_total",
            "counter",
            "The total number of bytes written successfully.",
        ),
        Family::new(
            "node_disk_write_time_seconds_total",
            "counter",
            "This is the total number of seconds spent by all writes.",
        ),
        Family::new(
            "node_disk_io_now",
            "gauge",
            "The number of I/Os currently in progress.",
        ),
        Family::new(
            "node_disk_io_time_seconds_total",
            "counter",
            "Total seconds spent doing I/Os.",
        ),
    ];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 || ignored_disk(f[2]) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        let dev = [("device", f[2])];
        // Fields after the name: reads, merged, sectors read, ms reading, writes, merged,
        // sectors written, ms writing, in progress, ms doing I/O.
        let values = [
            n(3),
            n(5) * 512.0,
            n(6) / 1000.0,
            n(7),
            n(9) * 512.0,
            n(10) / 1000.0,
            n(11),
            n(12) / 1000.0,
        ];
        for (fam, v) in fams.iter_mut().zip(values) {
            fam.add(&dev, v);
        }
    }
    fams
}

/// `/proc/net/dev`: bytes, packets, errors and drops per interface and direction (not the
/// loopback interface, as node_exporter's default).
pub fn netdev(text: &str) -> Vec<Family> {
    let names = [
        ("receive_bytes", 0),
        ("receive_packets", 1),
        ("receive_errs", 2),
        ("receive_drop", 3),
        ("transmit_bytes", 8),
        ("transmit_packets", 9),
        ("transmit_errs", 10),
        ("transmit_drop", 11),
    ];
    let mut fams: Vec<Family> = names
        .iter()
        .map(|(n, _)| {
            Family::new(
                &format!("node_network_{n}_total"),
                "counter",
                "Network device statistic from /proc/net/dev.",
            )
        })
        .collect();
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        // node_exporter's default device-exclude.
        if dev == "lo" {
            continue;
        }
        let v: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        if v.len() < 16 {
            continue;
        }
        for (fam, (_, i)) in fams.iter_mut().zip(names) {
            fam.add(&[("device", dev)], v[i]);
        }
    }
    fams
}

/// Filesystem types node_exporter leaves out by default.
const IGNORED_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mount points node_exporter leaves out by default (Debian's package's list, which adds
/// `/run`, `/mnt` and `/media` to upstream's).
fn ignored_mount(m: &str) -> bool {
    ["/dev", "/proc", "/run", "/sys", "/mnt", "/media"]
        .iter()
        .any(|p| m == *p || m.starts_with(&format!("{p}/")))
        || m.starts_with("/var/lib/docker/")
        || m.starts_with("/var/lib/containers/storage/")
}

/// The mounts of `/proc/mounts` whose filesystems are reported: (device, mount point, type).
pub fn mounts(text: &str) -> Vec<(String, String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || IGNORED_FS.contains(&f[2]) {
            continue;
        }
        // `\040` is a space in /proc/mounts.
        let mount = f[1].replace("\\040", " ");
        if ignored_mount(&mount) || !seen.insert((f[0].to_string(), mount.clone())) {
            continue;
        }
        out.push((f[0].to_string(), mount, f[2].to_string()));
    }
    out
}

/// `statvfs` of each mount: size, free, available, files, free files, read-only.
fn filesystems(mounts_text: &str) -> Vec<Family> {
    let mut fams = vec![
        Family::new(
            "node_filesystem_size_bytes",
            "gauge",
            "Filesystem size in bytes.",
        ),
        Family::new(
            "node_filesystem_free_bytes",
            "gauge",
            "Filesystem free space in bytes.",
        ),
        Family::new(
            "node_filesystem_avail_bytes",
            "gauge",
            "Filesystem space available to non-root users in bytes.",
        ),
        Family::new(
            "node_filesystem_files",
            "gauge",
            "Filesystem total file nodes.",
        ),
        Family::new(
            "node_filesystem_files_free",
            "gauge",
            "Filesystem total free file nodes.",
        ),
        Family::new(
            "node_filesystem_readonly",
            "gauge",
            "Filesystem read-only status.",
        ),
    ];
    for (dev, mount, fstype) in mounts(mounts_text) {
        let Ok(s) = rustix::fs::statvfs(Path::new(&mount)) else {
            continue;
        };
        let bs = s.f_frsize as f64;
        let ro = s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY);
        let labels = [
            ("device", dev.as_str()),
            ("fstype", fstype.as_str()),
            ("mountpoint", mount.as_str()),
        ];
        let values = [
            s.f_blocks as f64 * bs,
            s.f_bfree as f64 * bs,
            s.f_bavail as f64 * bs,
            s.f_files as f64,
            s.f_ffree as f64,
            if ro { 1.0 } else { 0.0 },
        ];
        for (fam, v) in fams.iter_mut().zip(values) {
            fam.add(&labels, v);
        }
    }
    fams
}

/// Every numeric directory of `/proc`: the processes, and the threads they run.
fn processes(proc: &Path) -> Vec<Family> {
    let (mut pids, mut threads) = (0u64, 0u64);
    if let Ok(rd) = std::fs::read_dir(proc) {
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            pids += 1;
            // "Threads:\t3" in status.
            if let Ok(s) = std::fs::read_to_string(e.path().join("status")) {
                threads += s
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(1);
            }
        }
    }
    vec![
        Family::one(
            "node_processes_pids",
            "gauge",
            "Number of PIDs",
            pids as f64,
        ),
        Family::one(
            "node_processes_threads",
            "gauge",
            "Allocated threads in system",
            threads as f64,
        ),
    ]
}

fn uname(proc: &Path) -> Family {
    let read = |f: &str| {
        std::fs::read_to_string(proc.join("sys/kernel").join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut f = Family::new(
        "node_uname_info",
        "gauge",
        "Labeled system information as provided by the uname system call.",
    );
    let (sysname, release, version, nodename, domain) = (
        read("ostype"),
        read("osrelease"),
        read("version"),
        read("hostname"),
        read("domainname"),
    );
    f.add(
        &[
            ("domainname", domain.as_str()),
            ("machine", std::env::consts::ARCH),
            ("nodename", nodename.as_str()),
            ("release", release.as_str()),
            ("sysname", sysname.as_str()),
            ("version", version.as_str()),
        ],
        1.0,
    );
    f
}

/// CPU busy percent over the last interval, from two `node_cpu_seconds_total` readings: the
/// `cpu_usage_percent` gauge the shipped fleet rules average.
pub fn cpu_usage_percent(prev: &Family, now: &Family) -> Option<Family> {
    let total = |f: &Family, idle: bool| -> f64 {
        f.samples
            .iter()
            .filter(|(l, _)| {
                let mode = l.iter().find(|(k, _)| k == "mode").map(|(_, v)| v.as_str());
                !idle || matches!(mode, Some("idle" | "iowait"))
            })
            .map(|(_, v)| v)
            .sum()
    };
    let dt = total(now, false) - total(prev, false);
    if dt <= 0.0 {
        return None;
    }
    let idle = total(now, true) - total(prev, true);
    Some(Family::one(
        "cpu_usage_percent",
        "gauge",
        "Percent of CPU time not idle over the last collection interval (all CPUs).",
        (100.0 * (1.0 - idle / dt)).clamp(0.0, 100.0),
    ))
}

/// Reads every family from `proc` (normally `/proc`); a file that cannot be read is skipped.
pub fn collect(proc: &Path) -> Vec<Family> {
    let read = |f: &str| std::fs::read_to_string(proc.join(f)).unwrap_or_default();
    let mut out = Vec::new();
    out.extend(stat(&read("stat")));
    out.extend(loadavg(&read("loadavg")));
    out.extend(meminfo(&read("meminfo")));
    out.extend(filesystems(&read("mounts")));
    out.extend(diskstats(&read("diskstats")));
    out.extend(netdev(&read("net/dev")));
    out.extend(processes(proc));
    out.push(uname(proc));
    out.retain(|f| !f.samples.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == name)?
            .samples
            .iter()
            .find_map(|(l, v)| {
                labels
                    .iter()
                    .all(|(k, want)| l.iter().any(|(n, x)| n == k && x == want))
                    .then_some(*v)
            })
    }

    #[test]
    fn proc_stat_and_loadavg() {
        let s = stat("cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 100 0 50 1000 5 0 1 0 7 0\nintr 12345 1 2\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n");
        assert_eq!(
            value(
                &s,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "idle")]
            ),
            Some(10.0)
        );
        assert_eq!(
            value(
                &s,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "node_cpu_guest_seconds_total",
                &[("cpu", "0"), ("mode", "user")]
            ),
            Some(0.07)
        );
        assert_eq!(
            value(&s, "node_cpu_seconds_total", &[("cpu", "")]),
            None,
            "the total line is not a CPU"
        );
        assert_eq!(value(&s, "node_context_switches_total", &[]), Some(999.0));
        assert_eq!(value(&s, "node_boot_time_seconds", &[]), Some(1.7e9));
        assert_eq!(value(&s, "node_procs_blocked", &[]), Some(1.0));
        let l = loadavg("0.52 0.58 0.59 2/1234 5678\n");
        assert_eq!(value(&l, "node_load5", &[]), Some(0.58));
        assert!(loadavg("garbage").is_empty());
    }

    #[test]
    fn meminfo_names_as_node_exporter() {
        let m = meminfo(
            "MemTotal:       16318480 kB\nActive(anon):    1000 kB\nHugePages_Total:       0\n",
        );
        assert_eq!(
            value(&m, "node_memory_MemTotal_bytes", &[]),
            Some(16318480.0 * 1024.0)
        );
        assert_eq!(
            value(&m, "node_memory_Active_anon_bytes", &[]),
            Some(1024000.0)
        );
        assert_eq!(value(&m, "node_memory_HugePages_Total", &[]), Some(0.0));
    }

    #[test]
    fn disks_networks_and_mounts() {
        let d = diskstats("   8       0 sda 100 0 2048 50 200 0 4096 70 0 120 120 0 0 0 0\n   8       1 sda1 1 0 8 1 2 0 16 1 0 1 1 0 0 0 0\n   7       0 loop0 1 0 8 1 0 0 0 0 0 1 1 0 0 0 0\n 259 0 nvme0n1 1 0 8 1 0 0 0 0 0 1 1\n 259 1 nvme0n1p1 1 0 8 1 0 0 0 0 0 1 1\n");
        assert_eq!(
            value(&d, "node_disk_read_bytes_total", &[("device", "sda")]),
            Some(2048.0 * 512.0)
        );
        assert_eq!(
            value(&d, "node_disk_io_time_seconds_total", &[("device", "sda")]),
            Some(0.12)
        );
        assert_eq!(
            value(&d, "node_disk_reads_completed_total", &[("device", "sda1")]),
            None
        );
        assert_eq!(
            value(
                &d,
                "node_disk_reads_completed_total",
                &[("device", "loop0")]
            ),
            None
        );
        assert_eq!(
            value(
                &d,
                "node_disk_reads_completed_total",
                &[("device", "nvme0n1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &d,
                "node_disk_reads_completed_total",
                &[("device", "nvme0n1p1")]
            ),
            None
        );
        let n = netdev("Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 5 6 7 8 0 0 0 0 9 10 11 12 0 0 0 0\n");
        assert_eq!(
            value(
                &n,
                "node_network_receive_bytes_total",
                &[("device", "eth0")]
            ),
            Some(5.0)
        );
        assert_eq!(
            value(&n, "node_network_receive_bytes_total", &[("device", "lo")]),
            None
        );
        assert_eq!(
            value(
                &n,
                "node_network_transmit_drop_total",
                &[("device", "eth0")]
            ),
            Some(12.0)
        );
        let m = mounts("/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sda2 /my\\040disk ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n");
        let points: Vec<&str> = m.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(points, vec!["/", "/my disk"]);
    }

    #[test]
    fn cpu_busy_percent() {
        let a = stat("cpu0 100 0 0 100 0 0 0 0\n");
        let b = stat("cpu0 150 0 0 150 0 0 0 0\n");
        let p = cpu_usage_percent(&a[0], &b[0]).unwrap();
        assert_eq!(p.samples[0].1, 50.0);
        assert!(cpu_usage_percent(&a[0], &a[0]).is_none());
    }

    #[test]
    fn reads_this_machine() {
        let f = collect(Path::new("/proc"));
        assert!(value(&f, "node_memory_MemTotal_bytes", &[]).unwrap() > 0.0);
        assert!(f.iter().any(|x| x.name == "node_cpu_seconds_total"));
        assert!(value(&f, "node_processes_pids", &[]).unwrap() >= 1.0);
    }
}
