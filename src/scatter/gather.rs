//! The destination side: read the chunks back from the stores in sequence
//! order, check each before a byte of it is delivered, and write the stream
//! out at the destination's own pace.
//!
//! Each store's index list says which sequence numbers it holds; the
//! gatherer reads the next run of consecutive chunks it knows about, one
//! pipeline per store and the stores in parallel, checks each chunk (CRC,
//! session, sequence number, VM) and delivers it. A chunk that fails a check
//! stops the gather before it is delivered: the destination's QEMU never
//! loads a corrupt chunk, and a stream cut short never reaches QEMU's end
//! marker, so QEMU refuses it too. The manifest (count, bytes, stream CRC) is
//! checked once the source's stream has ended; only then is the gather a
//! success and the keyspace removed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunk::{Chunk, Head, Keys, Manifest, StreamSum};
use super::store::{bulk_deadline, Store};
use super::{
    abort_reason, abort_value, AbortOnDrop, GatherConfig, GatherReport, ScatterError, StoreCount,
};

/// Gathers the VM's stream into `output`. `rp` is the read side of the
/// connection to the destination's QEMU: what QEMU sends back (its return
/// path) is relayed to the pusher through the stores. `None` for a one-way
/// output such as a pipe.
pub async fn gather<W, R>(
    cfg: &GatherConfig,
    mut output: W,
    rp: Option<R>,
) -> Result<GatherReport, ScatterError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin + Send + 'static,
{
    cfg.validate()?;
    let keys = Keys::new(&cfg.vm)?;
    let mut stores = Vec::new();
    for (i, url) in cfg.stores.iter().enumerate() {
        stores.push(Store::connect(url, i, cfg.timeout).await?);
    }
    let session = wait_head(cfg, &keys, &mut stores).await?;
    let rp_task = rp.map(|r| {
        AbortOnDrop(tokio::spawn(relay_return_path(
            cfg.stores.clone(),
            keys.clone(),
            r,
            cfg.timeout,
        )))
    });
    let started = Instant::now();
    let result = run(cfg, &keys, session, &mut stores, &mut output, started).await;
    drop(rp_task);
    // Whether it worked or not, the VM's memory has no business staying on
    // the intermediaries: on success it is on the destination; on failure
    // the migration has failed and the source still has the VM. After an
    // abort the pusher has cleared already, and its marker stays for others.
    let aborted = matches!(result, Err(ScatterError::Aborted(_)));
    for s in stores.iter_mut().filter(|_| !aborted) {
        if let Err(e) = s.clear(&keys).await {
            tracing::warn!(store = %s.url, error = %e, "cannot clear the VM's keyspace");
        }
        // And the pusher must stop: the source QEMU would otherwise wait
        // for ever for the destination's answer.
        if let Err(e) = &result {
            let _ = s
                .set(
                    &keys.abort(),
                    abort_value(session, &format!("gather: {e}")).as_bytes(),
                )
                .await;
        }
    }
    if let Err(e) = &result {
        tracing::warn!(vm = %cfg.vm, error = %e, "scatter gather failed");
    }
    result
}

/// Waits until every store holds the same push's header.
async fn wait_head(
    cfg: &GatherConfig,
    keys: &Keys,
    stores: &mut [Store],
) -> Result<u64, ScatterError> {
    let deadline = Instant::now() + cfg.wait;
    loop {
        let mut heads = Vec::new();
        for s in stores.iter_mut() {
            heads.push(match s.get(&keys.head()).await? {
                Some(b) => Some(Head::decode(&b).map_err(|m| ScatterError::Corrupt {
                    store: s.url.clone(),
                    what: "session header".into(),
                    message: m,
                })?),
                None => None,
            });
        }
        if let Some(Some(h)) = heads.first() {
            if heads.iter().all(|x| x.as_ref() == Some(h)) {
                if h.stores as usize != stores.len() {
                    return Err(ScatterError::Config(format!(
                        "the push spreads over {} stores, the gather was given {}",
                        h.stores,
                        stores.len()
                    )));
                }
                return Ok(h.session);
            }
        }
        if Instant::now() >= deadline {
            return Err(ScatterError::NoStream {
                vm: cfg.vm.clone(),
                secs: cfg.wait.as_secs_f64(),
            });
        }
        tokio::time::sleep(cfg.poll).await;
    }
}

async fn check_abort(keys: &Keys, stores: &mut [Store], session: u64) -> Result<(), ScatterError> {
    for s in stores.iter_mut() {
        if let Some(v) = s.get(&keys.abort()).await? {
            if let Some(why) = abort_reason(&v, session) {
                return Err(ScatterError::Aborted(why));
            }
        }
    }
    Ok(())
}

async fn run<W: AsyncWrite + Unpin>(
    cfg: &GatherConfig,
    keys: &Keys,
    session: u64,
    stores: &mut [Store],
    output: &mut W,
    started: Instant,
) -> Result<GatherReport, ScatterError> {
    let k = stores.len();
    let mut cursors = vec![0usize; k];
    let mut known: HashMap<u64, usize> = HashMap::new();
    let mut next = 0u64;
    let mut manifest: Option<Manifest> = None;
    let mut sum = StreamSum::default();
    let mut per_store: Vec<StoreCount> = cfg
        .stores
        .iter()
        .map(|u| StoreCount {
            store: u.clone(),
            ..StoreCount::default()
        })
        .collect();
    let mut last_progress = Instant::now();
    let mut first_chunk: Option<Instant> = None;
    // The largest chunk read so far, to size the next reads' deadlines.
    let mut largest = 0u64;
    loop {
        for (i, s) in stores.iter_mut().enumerate() {
            let seqs = s.index_from(keys, cursors[i]).await?;
            cursors[i] += seqs.len();
            for q in seqs {
                known.insert(q, i);
            }
        }
        if manifest.is_none() {
            for s in stores.iter_mut() {
                if let Some(b) = s.get(&keys.end()).await? {
                    let m = Manifest::decode(&b).map_err(|m| ScatterError::Corrupt {
                        store: s.url.clone(),
                        what: "manifest".into(),
                        message: m,
                    })?;
                    if m.session != session {
                        return Err(ScatterError::Corrupt {
                            store: s.url.clone(),
                            what: "manifest".into(),
                            message: "of another push".into(),
                        });
                    }
                    manifest = Some(m);
                    break;
                }
            }
        }
        check_abort(keys, stores, session).await?;

        let mut run = Vec::new();
        while run.len() < cfg.batch * k && known.contains_key(&(next + run.len() as u64)) {
            run.push(next + run.len() as u64);
        }
        if run.is_empty() {
            match manifest {
                Some(m) if m.chunks == next => break,
                Some(m) if m.chunks < next || known.keys().any(|&q| q >= m.chunks) => {
                    return Err(ScatterError::Incomplete(format!(
                        "the manifest says {} chunks, the stores hold more",
                        m.chunks
                    )))
                }
                _ => {}
            }
            if last_progress.elapsed() > cfg.idle {
                return Err(ScatterError::Incomplete(format!(
                    "chunk {next} did not arrive within {:.1} s ({})",
                    cfg.idle.as_secs_f64(),
                    match manifest {
                        Some(m) => format!("the manifest says {} chunks", m.chunks),
                        None => "and no manifest: the push has not finished".into(),
                    }
                )));
            }
            tokio::time::sleep(cfg.poll).await;
            continue;
        }
        let mut groups: Vec<Vec<u64>> = vec![Vec::new(); k];
        for &q in &run {
            groups[known[&q]].push(q);
        }
        // A batch may take as long as the next chunk may (`idle`), or longer
        // when its chunks are large: it is megabytes, and may share a slow
        // link with other gathers.
        let deadline = |n: usize| cfg.idle.max(bulk_deadline(cfg.timeout, largest * n as u64));
        let fetched = futures::future::join_all(
            stores
                .iter_mut()
                .zip(groups.iter())
                .map(|(s, g)| s.get_batch(keys, g, deadline(g.len()))),
        )
        .await;
        let mut values: HashMap<u64, Vec<u8>> = HashMap::new();
        for (i, r) in fetched.into_iter().enumerate() {
            for (q, v) in groups[i].iter().zip(r?) {
                let v = v.ok_or_else(|| {
                    ScatterError::Incomplete(format!(
                        "chunk {q} is listed on {} but missing",
                        cfg.stores[i]
                    ))
                })?;
                largest = largest.max(v.len() as u64);
                values.insert(*q, v);
            }
        }
        for q in run {
            let i = known[&q];
            let v = values.remove(&q).unwrap_or_default();
            let corrupt = |message: String| ScatterError::Corrupt {
                store: cfg.stores[i].clone(),
                what: format!("chunk {q}"),
                message,
            };
            let c = Chunk::decode(&v).map_err(corrupt)?;
            if c.session != session || c.seq != q || c.vm != cfg.vm {
                return Err(corrupt(format!(
                    "it is chunk {} of VM {} in push {:016x}",
                    c.seq, c.vm, c.session
                )));
            }
            output
                .write_all(&c.payload)
                .await
                .map_err(|e| ScatterError::Output(e.to_string()))?;
            sum.add(&c.payload);
            per_store[i].chunks += 1;
            per_store[i].bytes += v.len() as u64;
            known.remove(&q);
            next = q + 1;
        }
        output
            .flush()
            .await
            .map_err(|e| ScatterError::Output(e.to_string()))?;
        first_chunk.get_or_insert_with(Instant::now);
        last_progress = Instant::now();
    }
    let m = manifest.unwrap_or(Manifest {
        session,
        chunks: 0,
        bytes: 0,
        stream_crc: 0,
    });
    if m.chunks != sum.chunks || m.bytes != sum.bytes || m.stream_crc != sum.crc() {
        return Err(ScatterError::Incomplete(format!(
            "the stream does not match its manifest: {} chunks, {} bytes, crc {:08x}; manifest {} chunks, {} bytes, crc {:08x}",
            sum.chunks,
            sum.bytes,
            sum.crc(),
            m.chunks,
            m.bytes,
            m.stream_crc
        )));
    }
    let _ = output.shutdown().await;
    let report = GatherReport {
        vm: cfg.vm.clone(),
        session: format!("{session:016x}"),
        bytes: sum.bytes,
        chunks: sum.chunks,
        stream_crc: format!("{:08x}", sum.crc()),
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
        first_chunk_ms: first_chunk
            .map_or(0.0, |t| t.duration_since(started).as_secs_f64() * 1000.0),
        per_store,
        batch: cfg.batch,
    };
    tracing::info!(vm = %cfg.vm, bytes = report.bytes, chunks = report.chunks, "scatter gather done");
    Ok(report)
}

/// Appends what the destination's QEMU sends back to the `rp` list of every
/// store that takes it (tiny: a few messages per migration).
async fn relay_return_path<R: AsyncRead + Unpin>(
    urls: Vec<String>,
    keys: Keys,
    mut r: R,
    timeout: Duration,
) {
    let mut stores = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        if let Ok(s) = Store::connect(u, i, timeout).await {
            stores.push(s);
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                for s in &mut stores {
                    let _ = s.rpush_bytes(&keys.return_path(), &buf[..n]).await;
                }
            }
        }
    }
}
