//! The source side: split a migration stream into sequenced, checksummed
//! chunks and spread them over the intermediaries' stores.
//!
//! One reader cuts the stream; one writer task per store takes the next batch
//! from a shared queue, writes it as one pipeline and waits for Redis's
//! replies. A faster store comes back for work sooner, so the spreading
//! follows each store's acknowledged rate (a slow or far intermediary gets
//! fewer batches) without any rate being configured. The queue is bounded, so
//! the source's QEMU is held to the pace the stores acknowledge at, and
//! memory stays under (queue + stores) × batch × chunk size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

use super::chunk::{Chunk, Head, Keys, Manifest, StreamSum};
use super::store::Store;
use super::{
    abort_reason, abort_value, AbortOnDrop, PushConfig, PushReport, ScatterError, StoreCount,
};

type Batch = Vec<(u64, Vec<u8>)>;

/// Pushes everything read from `input` until its end. `rp` receives the
/// return-path bytes the gatherer relays back from the destination (see the
/// module documentation of [`super`]); pass `None` for a one-way stream.
pub async fn push<R, W>(
    cfg: &PushConfig,
    mut input: R,
    rp: Option<W>,
) -> Result<PushReport, ScatterError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    cfg.validate()?;
    let keys = Keys::new(&cfg.vm)?;
    let session = u64::from_be_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut stores = Vec::new();
    for (i, url) in cfg.stores.iter().enumerate() {
        stores.push(Store::connect(url, i, cfg.timeout).await?);
    }
    // An earlier push of this VM (failed, or never gathered) must not leave
    // chunks a gatherer could mistake for ours: clear, then claim the keyspace.
    let head = Head {
        session,
        stores: stores.len() as u32,
    }
    .encode();
    for s in &mut stores {
        s.clear(&keys).await?;
        s.set(&keys.head(), &head).await?;
    }
    let started = Instant::now();
    // A gatherer that fails says so on the stores; the push must then fail
    // too, or the source QEMU would wait for ever for the destination's
    // answer on the return path. Dropping `run` closes QEMU's connection.
    let result = tokio::select! {
        r = run(cfg, &keys, session, stores, &mut input, rp, started) => r,
        e = watch_abort(&cfg.stores, &keys, session, cfg.timeout) => Err(e),
    };
    if let Err(e) = &result {
        tracing::warn!(vm = %cfg.vm, error = %e, "scatter push failed");
        // Best effort: tell a gatherer at once, and free what the stores hold.
        let marker = abort_value(session, &e.to_string());
        for url in &cfg.stores {
            if let Ok(mut s) = Store::connect(url, 0, Duration::from_secs(2)).await {
                let _ = s.clear(&keys).await;
                let _ = s.set(&keys.abort(), marker.as_bytes()).await;
            }
        }
    }
    result
}

/// Returns when a store holds an abort marker of this session.
async fn watch_abort(
    urls: &[String],
    keys: &Keys,
    session: u64,
    timeout: Duration,
) -> ScatterError {
    let mut stores = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        if let Ok(s) = Store::connect(u, i, timeout).await {
            stores.push(s);
        }
    }
    loop {
        for s in &mut stores {
            if let Ok(Some(v)) = s.get(&keys.abort()).await {
                if let Some(why) = abort_reason(&v, session) {
                    return ScatterError::Aborted(why);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run<R, W>(
    cfg: &PushConfig,
    keys: &Keys,
    session: u64,
    stores: Vec<Store>,
    input: &mut R,
    rp: Option<W>,
    started: Instant,
) -> Result<PushReport, ScatterError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let k = stores.len();
    let (tx, rx) = mpsc::channel::<Batch>(k.max(2));
    let rx = Arc::new(Mutex::new(rx));
    // (store, chunks, bytes, when Redis acknowledged them)
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<(usize, u64, u64, Instant)>();
    let mut writers = tokio::task::JoinSet::new();
    let urls: Vec<String> = stores.iter().map(|s| s.url.clone()).collect();
    for mut store in stores {
        let (rx, acks_tx, keys) = (rx.clone(), acks_tx.clone(), keys.clone());
        writers.spawn(async move {
            loop {
                let batch = { rx.lock().await.recv().await };
                let Some(batch) = batch else {
                    return Ok::<Store, ScatterError>(store);
                };
                let bytes: u64 = batch.iter().map(|(_, v)| v.len() as u64).sum();
                store.write_batch(&keys, &batch).await?;
                let _ = acks_tx.send((store.index, batch.len() as u64, bytes, Instant::now()));
            }
        });
    }
    drop(acks_tx);

    // The return path: bytes the destination's QEMU sent back, relayed by
    // the gatherer through the stores' `rp` list.
    let rp_task = rp.map(|w| {
        let urls = urls.clone();
        let keys = keys.clone();
        let timeout = cfg.timeout;
        AbortOnDrop(tokio::spawn(relay_return_path(urls, keys, w, timeout)))
    });

    let mut sum = StreamSum::default();
    let mut seq = 0u64;
    let mut batch: Batch = Vec::with_capacity(cfg.batch);
    let mut buf = vec![0u8; cfg.chunk_bytes];
    let mut fill = 0usize;
    let mut first_byte: Option<Instant> = None;
    let mut first_byte_unix_ms = 0.0;
    let mut per_store = vec![StoreCount::default(); k];
    let mut acked_chunks = 0u64;
    let mut last_ack = None;
    let mut eof = false;

    // Reads until the chunk is full, the stream ends, or it pauses for
    // `flush` with bytes waiting: a stream that pauses (QEMU waiting for the
    // destination's answer on the return path) must not leave its last bytes
    // stuck in a half-full chunk.
    while !eof {
        let n = if fill == 0 {
            input.read(&mut buf[fill..]).await
        } else {
            match tokio::time::timeout(cfg.flush, input.read(&mut buf[fill..])).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
            }
        };
        let (cut, paused) = match n {
            Ok(0) => {
                eof = true;
                (fill > 0, true)
            }
            Ok(n) => {
                if first_byte.is_none() {
                    first_byte = Some(Instant::now());
                    first_byte_unix_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                }
                fill += n;
                (fill == buf.len(), false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (true, true),
            Err(e) => return Err(ScatterError::Input(e.to_string())),
        };
        if cut {
            let payload = buf[..fill].to_vec();
            fill = 0;
            sum.add(&payload);
            let c = Chunk {
                session,
                seq,
                vm: cfg.vm.clone(),
                payload,
            };
            batch.push((seq, c.encode()));
            seq += 1;
        }
        // A partial batch goes out when the stream pauses or ends, for the
        // same reason as a partial chunk.
        if batch.len() >= cfg.batch || (paused && !batch.is_empty()) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(cfg.batch));
            // Waits while every store is busy and the queue is full: this is
            // the back-pressure on QEMU. A send fails only if every writer
            // has stopped, i.e. failed: its error is collected below.
            if tx.send(full).await.is_err() {
                break;
            }
        }
        while let Ok((i, c, b, t)) = acks.try_recv() {
            per_store[i].chunks += c;
            per_store[i].bytes += b;
            acked_chunks += c;
            last_ack = last_ack.max(Some(t));
        }
        // A writer that failed ends the push now, not at the end of the
        // stream: the source must learn while its VM is still there.
        if let Some(res) = writers.try_join_next() {
            check_writer(res)?;
        }
    }
    drop(tx);
    let mut done = Vec::new();
    while let Some(res) = writers.join_next().await {
        done.push(check_writer(res)?);
    }
    while let Ok((i, c, b, t)) = acks.try_recv() {
        per_store[i].chunks += c;
        per_store[i].bytes += b;
        acked_chunks += c;
        last_ack = last_ack.max(Some(t));
    }
    if acked_chunks != seq {
        return Err(ScatterError::Input(format!(
            "{seq} chunks cut but {acked_chunks} acknowledged"
        )));
    }
    let manifest = Manifest {
        session,
        chunks: seq,
        bytes: sum.bytes,
        stream_crc: sum.crc(),
    }
    .encode();
    for s in &mut done {
        s.set(&keys.end(), &manifest).await?;
    }
    let finished = Instant::now();
    drop(rp_task);
    let t0 = first_byte.unwrap_or(started);
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    for (i, c) in per_store.iter_mut().enumerate() {
        c.store = urls[i].clone();
    }
    let report = PushReport {
        vm: cfg.vm.clone(),
        session: format!("{session:016x}"),
        bytes: sum.bytes,
        chunks: seq,
        stream_crc: format!("{:08x}", sum.crc()),
        eviction_ms: last_ack.map_or(0.0, ms),
        first_byte_unix_ms,
        input_closed_ms: ms(finished),
        per_store,
        batch: cfg.batch,
        chunk_bytes: cfg.chunk_bytes,
    };
    tracing::info!(vm = %cfg.vm, bytes = report.bytes, chunks = report.chunks,
        eviction_ms = report.eviction_ms, "scatter push done");
    Ok(report)
}

fn check_writer(
    res: Result<Result<Store, ScatterError>, tokio::task::JoinError>,
) -> Result<Store, ScatterError> {
    match res {
        Ok(r) => r,
        Err(e) => Err(ScatterError::Input(format!("store writer task ended: {e}"))),
    }
}

/// Copies the `rp` list (return-path bytes, appended by the gatherer to every
/// store) to `w`, polling. Reads from the first store that answers: the
/// lists are the same on every store.
async fn relay_return_path<W: AsyncWrite + Unpin>(
    urls: Vec<String>,
    keys: Keys,
    mut w: W,
    timeout: Duration,
) {
    let mut stores = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        if let Ok(s) = Store::connect(u, i, timeout).await {
            stores.push(s);
        }
    }
    let mut next = 0usize;
    loop {
        let mut got = None;
        for s in &mut stores {
            if let Ok(v) = s.list_bytes_from(&keys.return_path(), next).await {
                got = Some(v);
                break;
            }
        }
        if let Some(parts) = got {
            for p in &parts {
                if w.write_all(p).await.is_err() {
                    return;
                }
            }
            if !parts.is_empty() {
                next += parts.len();
                if w.flush().await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
