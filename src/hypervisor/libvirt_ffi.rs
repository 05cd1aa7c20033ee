//! The two libvirt calls that `virt` 0.5 does not wrap and that solive
//! cannot do as well another way, made directly on `virt-sys`. This is the
//! one of the two modules allowed `unsafe` (the other is `crate::child`); each call is one C function on
//! a domain handle that `virt` owns, with libvirt's usual `-1` for failure.
//!
//! - `virDomainAbortJob`: the monitor's `migrate_cancel` only stops a
//!   migration QEMU already runs. While libvirt still prepares the
//!   destination there is none, and a cancel sent then was lost (the VM
//!   migrated anyway). libvirt's own abort also marks its job aborted, and
//!   its migration code checks that mark before it starts QEMU's migration
//!   ("canceled by client"), so a cancel is never lost in that window.
//! - `virDomainMigrateStartPostCopy`: the switch through libvirt's job
//!   rather than around it, so libvirt knows the migration is in post-copy
//!   (it then refuses an abort that would lose the VM).
//! - `virDomainGetJobStats`: `virt` 0.5 wraps it, but builds a `Vec` on
//!   libvirt's parameter array without checking it for NULL, which libvirt
//!   returns when it holds no statistics (a debug build aborts on it,
//!   "unsafe precondition(s) violated", seen on the testbed), and frees
//!   the array with Rust's allocator, leaking its strings.
#![allow(unsafe_code)]

use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

use super::disks::BlockJob;

/// `virDomainAbortJob`: aborts the domain's current job (here: the outgoing
/// migration), including one that has not reached QEMU yet.
pub fn abort_job(dom: &Domain) -> Result<(), Error> {
    // SAFETY: `dom` is a live handle owned by `virt` for the whole call (the
    // borrow keeps it from being freed); the function only reads it.
    let ret = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainMigrateStartPostCopy` (flags must be 0).
pub fn start_post_copy(dom: &Domain) -> Result<(), Error> {
    // SAFETY: as in `abort_job`.
    let ret = unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainGetJobStats`: the domain's job statistics (with
/// `VIR_DOMAIN_JOB_STATS_COMPLETED`, its last completed job's), or None when
/// libvirt has none.
pub fn job_stats(dom: &Domain, flags: u32) -> Result<Option<virt::domain::JobStats>, Error> {
    let mut kind: std::os::raw::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: as in `abort_job` for `dom`; the three out-pointers are
    // locals that live through the call.
    let ret =
        unsafe { sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut n, flags) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    if params.is_null() {
        return Ok(None);
    }
    // SAFETY: libvirt returned `n` initialised parameters at `params`; they
    // are copied (strings too, by `virt`'s reader) before the array is
    // given back to libvirt, which frees it and its strings.
    let stats = unsafe {
        let copy = std::slice::from_raw_parts(params, n.max(0) as usize).to_vec();
        let stats = virt::domain::JobStats::from((kind, copy));
        sys::virTypedParamsFree(params, n);
        stats
    };
    Ok((kind != sys::VIR_DOMAIN_JOB_NONE as i32).then_some(stats))
}

// The disk calls behind pre-caching (crate::cache): `virt` 0.5 wraps no
// snapshot creation and no block commit, and its block job query ignores
// libvirt's errors. They are made through libvirt, not QEMU's monitor, so
// libvirt's own view of each disk's backing chain stays true (a migration
// after them needs it).

fn c_string(s: &str) -> Result<std::ffi::CString, Error> {
    // A NUL inside a path or an XML document is a caller's bug; libvirt
    // would read it cut short, so it is refused instead.
    std::ffi::CString::new(s).map_err(|_| Error::last_error())
}

/// `virDomainSnapshotCreateXML`; the snapshot handle is freed at once (the
/// callers make snapshots without metadata: only the new overlays remain).
pub fn snapshot_create(dom: &Domain, xml: &str, flags: u32) -> Result<(), Error> {
    let xml = c_string(xml)?;
    // SAFETY: `dom` is live for the call (borrowed); `xml` outlives it.
    let snap = unsafe { sys::virDomainSnapshotCreateXML(dom.as_ptr(), xml.as_ptr(), flags) };
    if snap.is_null() {
        return Err(Error::last_error());
    }
    // SAFETY: `snap` was just returned non-null by libvirt and is freed once.
    unsafe { sys::virDomainSnapshotFree(snap) };
    Ok(())
}

/// `virDomainBlockCommit` of `top` into `base` on disk `disk`, unlimited.
/// Starts the job; [`block_job`] tells its end. `active`: `top` is the
/// layer the guest writes to (`VIR_DOMAIN_BLOCK_COMMIT_ACTIVE`): the job
/// then never ends by itself but becomes ready (`BlockJob::ready`) and
/// waits for a pivot ([`block_job_pivot`]).
pub fn block_commit(
    dom: &Domain,
    disk: &str,
    base: &str,
    top: &str,
    active: bool,
) -> Result<(), Error> {
    let flags = if active {
        sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    } else {
        0
    };
    let (disk, base, top) = (c_string(disk)?, c_string(base)?, c_string(top)?);
    // SAFETY: as in `snapshot_create`; the strings outlive the call.
    let ret = unsafe {
        sys::virDomainBlockCommit(
            dom.as_ptr(),
            disk.as_ptr(),
            base.as_ptr(),
            top.as_ptr(),
            0,
            flags,
        )
    };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainGetBlockJobInfo`: the job running on `disk`, None when none
/// runs (libvirt's 0; 1 when one does, -1 on error).
fn block_job_info(dom: &Domain, disk: &str) -> Result<Option<sys::virDomainBlockJobInfo>, Error> {
    let disk = c_string(disk)?;
    let mut info = sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: `info` is a valid, writable struct for the whole call.
    let ret = unsafe { sys::virDomainGetBlockJobInfo(dom.as_ptr(), disk.as_ptr(), &mut info, 0) };
    match ret {
        -1 => Err(Error::last_error()),
        0 => Ok(None),
        _ => Ok(Some(info)),
    }
}

/// The block job running on `disk`, if any: which kind, and whether it is
/// ready to pivot (libvirt reports `cur == end` only once QEMU said the job
/// is ready; it holds `cur` one short of `end` until then).
pub fn block_job(dom: &Domain, disk: &str) -> Result<Option<BlockJob>, Error> {
    use super::disks::BlockJobKind;
    Ok(block_job_info(dom, disk)?.map(|i| BlockJob {
        kind: match i.type_ as u32 {
            sys::VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT => BlockJobKind::Commit,
            sys::VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT => BlockJobKind::ActiveCommit,
            other => BlockJobKind::Other(other),
        },
        ready: i.cur == i.end,
    }))
}

/// `virDomainBlockJobAbort` (flags 0: cancels the job, the chain stays).
pub fn block_job_abort(dom: &Domain, disk: &str) -> Result<(), Error> {
    job_abort(dom, disk, 0)
}

/// `virDomainBlockJobAbort` with `VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT`: ends a
/// ready active commit, the guest now writing to its base.
pub fn block_job_pivot(dom: &Domain, disk: &str) -> Result<(), Error> {
    job_abort(dom, disk, sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
}

fn job_abort(dom: &Domain, disk: &str, flags: u32) -> Result<(), Error> {
    let disk = c_string(disk)?;
    // SAFETY: as in `snapshot_create`.
    let ret = unsafe { sys::virDomainBlockJobAbort(dom.as_ptr(), disk.as_ptr(), flags) };
    if ret == -1 {
        return Err(Error::last_error());
    }
    Ok(())
}
