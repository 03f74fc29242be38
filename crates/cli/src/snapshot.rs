//! `skiff snapshot save|restore` and the server's scheduled snapshots.
//!
//! Saving asks the running server for a snapshot (`GET /skiff/v1/snapshot`, admin only): the
//! server owns its store — the embedded engine holds the data directory's lock and reads at
//! one pinned revision while it keeps serving, and an etcd-backed server streams etcd's own
//! snapshot API — so the result is consistent without stopping anything, and no second
//! process ever touches the store's files. Every snapshot is written to `FILE.part`, synced,
//! checked end to end (Skiff's format: every frame's CRC and the trailer's count; etcd's: the
//! SHA-256 etcd appends) and only then renamed into place, so a file named like a snapshot is
//! always a complete one. Restoring installs a Skiff snapshot as a fresh embedded store with
//! its revision raised, so clients re-list instead of missing events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use skiff_store::{SnapshotFormat, Store};

use crate::Error;

/// `skiff snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// Snapshot subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of a running server's store to FILE.
    Save(SaveArgs),
    /// Restore a Skiff snapshot into a data directory, for `skiff server --data-dir DIR`.
    Restore(RestoreArgs),
}

/// `skiff snapshot save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the snapshot.
    pub file: PathBuf,
    /// Admin kubeconfig of the server [default: <data-dir>/kubeconfig.yaml].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data directory (to find its admin kubeconfig).
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `skiff snapshot restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot to restore.
    pub file: PathBuf,
    /// Data directory to restore into; its store (`<dir>/db`) must not exist yet.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// How far to raise the revision above the snapshot's: writes made after the snapshot
    /// may have handed out revisions up to this much higher.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub bump_revision: i64,
}

/// What a saved snapshot holds.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: SnapshotFormat,
    /// Its size.
    pub bytes: u64,
    /// Revision and key count (Skiff snapshots only).
    pub summary: Option<skiff_store::embedded::SnapshotSummary>,
}

impl std::fmt::Display for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} format, {} bytes",
            self.path.display(),
            self.format.name(),
            self.bytes
        )?;
        if let Some(s) = &self.summary {
            write!(f, ", revision {}, {} keys", s.revision, s.keys)?;
        }
        f.write_str(")")
    }
}

fn failed(detail: impl std::fmt::Display) -> Error {
    Error::Snapshot(detail.to_string())
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// Check a complete snapshot file in `format`.
fn verify(path: &Path, format: SnapshotFormat) -> Result<Saved, Error> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| failed(format!("reading {}: {e}", path.display())))?
        .len();
    let summary = match format {
        SnapshotFormat::Skiff => Some(
            skiff_store::embedded::verify_snapshot(path)
                .map_err(|e| failed(format!("the snapshot is incomplete or damaged: {e}")))?,
        ),
        SnapshotFormat::Etcd => {
            verify_etcd(path)?;
            None
        }
    };
    Ok(Saved {
        path: path.to_owned(),
        format,
        bytes,
        summary,
    })
}

/// etcd ends its snapshot stream with the SHA-256 of everything before it.
fn verify_etcd(path: &Path) -> Result<(), Error> {
    use std::io::Read;
    let len = std::fs::metadata(path).map_err(failed)?.len();
    if len < 32 {
        return Err(failed("the etcd snapshot is too short to be complete"));
    }
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut remaining = len - 32;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want]).map_err(failed)?;
        context.update(&buf[..want]);
        remaining -= want as u64;
    }
    let mut expected = [0u8; 32];
    file.read_exact(&mut expected).map_err(failed)?;
    if context.finish().as_ref() != expected {
        return Err(failed(
            "the etcd snapshot's SHA-256 does not match: incomplete or damaged",
        ));
    }
    Ok(())
}

/// Write chunks to `path` safely: into `path.part`, synced, checked, then renamed.
async fn write_checked(
    path: &Path,
    format: SnapshotFormat,
    mut next: impl AsyncChunks,
) -> Result<Saved, Error> {
    use tokio::io::AsyncWriteExt;
    let part = part_path(path);
    let written = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| failed(format!("creating {}: {e}", part.display())))?;
        while let Some(chunk) = next.next_chunk().await? {
            file.write_all(&chunk)
                .await
                .map_err(|e| failed(format!("writing {}: {e}", part.display())))?;
        }
        file.sync_all()
            .await
            .map_err(|e| failed(format!("syncing {}: {e}", part.display())))?;
        let part = part.clone();
        tokio::task::spawn_blocking(move || verify(&part, format))
            .await
            .map_err(failed)?
    }
    .await;
    let mut saved = match written {
        Ok(saved) => saved,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, path)
        .map_err(|e| failed(format!("renaming {}: {e}", part.display())))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    saved.path = path.to_owned();
    Ok(saved)
}

/// A source of snapshot chunks.
trait AsyncChunks {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error>;
}

struct FromStore(tokio::sync::mpsc::Receiver<Bytes>);

impl AsyncChunks for FromStore {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        Ok(self.0.recv().await)
    }
}

struct FromHttp(kube::client::Body);

impl AsyncChunks for FromHttp {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        use http_body_util::BodyExt;
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(failed(format!("downloading the snapshot: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Snapshot a store this process runs (the server's scheduled snapshots) into `path`.
pub async fn save_store(store: &Arc<dyn Store>, path: &Path) -> Result<Saved, Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let taking = {
        let store = store.clone();
        tokio::spawn(async move { store.snapshot(tx).await })
    };
    let saved = write_checked(path, store.snapshot_format(), FromStore(rx)).await;
    match taking.await {
        Ok(Ok(())) => saved,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(path);
            Err(failed(format!("taking the snapshot: {e}")))
        }
        Err(e) => Err(failed(e)),
    }
}

/// `skiff snapshot save FILE`: download a snapshot from the running server.
pub async fn save(args: SaveArgs) -> Result<Saved, Error> {
    let kubeconfig = match args.kubeconfig {
        Some(path) => path,
        None => args
            .data_dir
            .unwrap_or_else(crate::server::default_data_dir)
            .join("kubeconfig.yaml"),
    };
    let config = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| failed(format!("reading {}: {e}", kubeconfig.display())))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .map_err(|e| failed(format!("using {}: {e}", kubeconfig.display())))?;
    let client = kube::Client::try_from(config).map_err(failed)?;
    let request = http::Request::get(skiff_apiserver::snapshot::PATH)
        .body(kube::client::Body::from(Vec::new()))
        .map_err(failed)?;
    let response = client
        .send(request)
        .await
        .map_err(|e| failed(format!("asking the server for a snapshot: {e}")))?;
    let status = response.status();
    let format = match response
        .headers()
        .get(skiff_apiserver::snapshot::FORMAT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some("skiff") => Some(SnapshotFormat::Skiff),
        Some("etcd") => Some(SnapshotFormat::Etcd),
        _ => None,
    };
    let body = response.into_body();
    let (true, Some(format)) = (status.is_success(), format) else {
        use http_body_util::BodyExt;
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(failed(format!("the server answered {status}: {message}")));
    };
    write_checked(&args.file, format, FromHttp(body)).await
}

/// `skiff snapshot restore FILE --data-dir DIR`.
pub fn restore(args: RestoreArgs) -> Result<skiff_store::embedded::SnapshotSummary, Error> {
    use std::io::Read;
    let mut head = vec![0u8; 64];
    let n = std::fs::File::open(&args.file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| failed(format!("reading {}: {e}", args.file.display())))?;
    if !skiff_store::embedded::is_snapshot(&head[..n]) {
        return Err(failed(format!(
            "{} is not a Skiff snapshot (an etcd snapshot is restored with `etcdctl snapshot restore`, \
             then served with `skiff server --store etcd://...`)",
            args.file.display()
        )));
    }
    if args.bump_revision < 0 {
        return Err(Error::Config(vec![
            "--bump-revision: must not be negative".into(),
        ]));
    }
    skiff_store::embedded::restore(&args.file, &args.data_dir.join("db"), args.bump_revision)
        .map_err(Error::Store)
}

/// When scheduled snapshots are taken: a cron expression (five fields, UTC) or a descriptor
/// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@every 30m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Fixed intervals from start-up.
    Every(Duration),
    /// Minutes matching a cron expression.
    Cron(Box<Cron>),
}

/// A parsed five-field cron expression: the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Whether day-of-month / day-of-week were restricted (cron ORs them when both are).
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn parse_field(text: &str, min: u32, max: u32, name: &str) -> Result<(Vec<bool>, bool), String> {
    let mut allowed = vec![false; max as usize + 1];
    let restricted = text != "*";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: bad step in {part:?}"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a: u32 = a.parse().map_err(|_| format!("{name}: bad value {a:?}"))?;
            let b: u32 = b.parse().map_err(|_| format!("{name}: bad value {b:?}"))?;
            (a, b)
        } else {
            let v: u32 = range
                .parse()
                .map_err(|_| format!("{name}: bad value {range:?}"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name}: {part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok((allowed, restricted))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expression = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => {
                if let Some(every) = other.strip_prefix("@every ") {
                    return parse_duration(every)
                        .map(Schedule::Every)
                        .ok_or_else(|| format!("{every:?} is not a duration like 30s, 15m, 6h"));
                }
                other
            }
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "{text:?} is not a cron expression: expected 5 fields (minute hour day month weekday)"
            ));
        };
        let (minutes, _) = parse_field(minute, 0, 59, "minute")?;
        let (hours, _) = parse_field(hour, 0, 23, "hour")?;
        let (days, days_restricted) = parse_field(day, 1, 31, "day of month")?;
        let (months, _) = parse_field(month, 1, 12, "month")?;
        let (mut weekdays, weekdays_restricted) = parse_field(weekday, 0, 7, "day of week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Schedule::Cron(Box::new(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted,
            weekdays_restricted,
        })))
    }
}

impl Cron {
    fn matches(&self, t: &jiff::civil::DateTime) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().to_sunday_zero_offset() as usize];
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }
}

impl Schedule {
    /// How long from `now` until the next run.
    pub fn delay_after(&self, now: jiff::Timestamp) -> Option<Duration> {
        match self {
            Schedule::Every(every) => Some(*every),
            Schedule::Cron(cron) => {
                let utc = now.to_zoned(jiff::tz::TimeZone::UTC).datetime();
                let mut t = utc
                    .with()
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()
                    .ok()?
                    .checked_add(jiff::SignedDuration::from_mins(1))
                    .ok()?;
                // Four years of minutes covers every satisfiable expression (Feb 29).
                for _ in 0..(4 * 366 * 24 * 60) {
                    if cron.matches(&t) {
                        let at = t.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
                        return Duration::try_from(at.duration_since(now)).ok();
                    }
                    t = t.checked_add(jiff::SignedDuration::from_mins(1)).ok()?;
                }
                None
            }
        }
    }
}

/// Scheduled snapshots of the server's own store.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// When.
    pub schedule: Schedule,
    /// How many to keep.
    pub retention: usize,
    /// Where.
    pub dir: PathBuf,
}

const SCHEDULED_PREFIX: &str = "skiff-snapshot-";

/// Take snapshots on schedule for as long as the server runs, keeping the newest
/// `retention`.
pub async fn run_schedule(store: Arc<dyn Store>, scheduled: Scheduled) {
    loop {
        let Some(delay) = scheduled.schedule.delay_after(jiff::Timestamp::now()) else {
            tracing::warn!("the snapshot schedule never fires again");
            return;
        };
        tokio::time::sleep(delay).await;
        match take_scheduled(&store, &scheduled).await {
            Ok(saved) => tracing::info!(snapshot = %saved, "scheduled snapshot saved"),
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot failed"),
        }
    }
}

async fn take_scheduled(store: &Arc<dyn Store>, scheduled: &Scheduled) -> Result<Saved, Error> {
    std::fs::create_dir_all(&scheduled.dir)
        .map_err(|e| failed(format!("creating {}: {e}", scheduled.dir.display())))?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.3fZ")
        .to_string();
    let name = format!(
        "{SCHEDULED_PREFIX}{stamp}.{}",
        store.snapshot_format().name()
    );
    let saved = save_store(store, &scheduled.dir.join(name)).await?;
    prune(&scheduled.dir, scheduled.retention)?;
    Ok(saved)
}

/// Delete the oldest scheduled snapshots beyond `retention` (names sort by time).
fn prune(dir: &Path, retention: usize) -> Result<(), Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(failed)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(SCHEDULED_PREFIX) && !n.ends_with(".part"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(retention.max(1));
    for name in &names[..excess] {
        std::fs::remove_file(dir.join(name)).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn cron_expressions_find_the_next_minute() {
        let every_6h: Schedule = "0 */6 * * *".parse().unwrap();
        assert_eq!(
            every_6h.delay_after(at("2025-01-01T05:30:00Z")),
            Some(Duration::from_secs(30 * 60))
        );
        let daily: Schedule = "@daily".parse().unwrap();
        assert_eq!(
            daily.delay_after(at("2025-01-01T23:59:30Z")),
            Some(Duration::from_secs(30))
        );
        // Weekdays 1-5 at 02:15; 2025-01-04 is a Saturday.
        let weekdays: Schedule = "15 2 * * 1-5".parse().unwrap();
        assert_eq!(
            weekdays.delay_after(at("2025-01-04T03:00:00Z")),
            Some(Duration::from_secs(47 * 3600 + 15 * 60))
        );
        let leap: Schedule = "0 0 29 2 *".parse().unwrap();
        assert!(leap.delay_after(at("2025-03-01T00:00:00Z")).is_some());
        assert_eq!(
            "@every 90s".parse::<Schedule>().unwrap(),
            Schedule::Every(Duration::from_secs(90))
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "@every",
            "@every 5x",
            "@sometimes",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20250101", "20250103", "20250102", "20250104"] {
            std::fs::write(
                dir.path().join(format!("{SCHEDULED_PREFIX}{stamp}.skiff")),
                b"",
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("unrelated"), b"").unwrap();
        prune(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{SCHEDULED_PREFIX}20250103.skiff"),
                format!("{SCHEDULED_PREFIX}20250104.skiff"),
                "unrelated".to_owned()
            ]
        );
    }
}
