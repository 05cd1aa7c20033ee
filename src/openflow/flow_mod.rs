//! FLOW_MOD and FLOW_REMOVED.
//!
//! ```text
//! flow_mod body (after the 8-byte header), 40 fixed bytes:
//! +---------------------------------------------------------------+
//! | cookie (64)                                                   |
//! | cookie_mask (64)                                              |
//! +---------------+---------------+-------------------------------+
//! | table_id (8)  | command (8)   | idle_timeout (16)             |
//! +---------------+---------------+-------------------------------+
//! | hard_timeout (16)             | priority (16)                 |
//! +-------------------------------+-------------------------------+
//! | buffer_id (32)                | out_port (32)                 |
//! | out_group (32)                | flags (16)    | pad (16)      |
//! +-------------------------------+-------------------------------+
//! | ofp_match (padded to 8) | instructions ...                    |
//! +---------------------------------------------------------------+
//!
//! flow_removed body, 40 fixed bytes:
//! cookie (64) | priority (16) | reason (8) | table_id (8)
//! duration_sec (32) | duration_nsec (32) | idle_timeout (16) | hard_timeout (16)
//! packet_count (64) | byte_count (64) | ofp_match
//! ```

use super::error::DecodeError;
use super::frame::Reader;
use super::instruction::{self, Instruction};
use super::oxm::Match;
use super::util::{flags, open_enum};
use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// `OFP_NO_BUFFER`.
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// `OFPTT_ALL`: all tables (delete and stats requests).
pub const TABLE_ALL: u8 = 0xff;
/// `OFPG_ANY`.
pub const GROUP_ANY: u32 = 0xffff_ffff;

open_enum! {
    pub enum FlowModCommand: u8 {
        Add = 0 => "ADD",
        Modify = 1 => "MOD",
        ModifyStrict = 2 => "MOD_STRICT",
        Delete = 3 => "DEL",
        DeleteStrict = 4 => "DEL_STRICT",
    }
}

flags! {
    /// `ofp_flow_mod_flags`.
    pub struct FlowModFlags: u16 {
        SEND_FLOW_REM = 1 => "send_flow_rem",
        CHECK_OVERLAP = 2 => "check_overlap",
        RESET_COUNTS = 4 => "reset_counts",
        NO_PKT_COUNTS = 8 => "no_packet_counts",
        NO_BYT_COUNTS = 16 => "no_byte_counts",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: FlowModCommand,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: FlowModFlags,
    #[serde(rename = "match")]
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    fn new(
        command: FlowModCommand,
        table_id: u8,
        priority: u16,
        m: Match,
        ins: Vec<Instruction>,
    ) -> Self {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id,
            command,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: NO_BUFFER,
            out_port: super::port::ANY,
            out_group: GROUP_ANY,
            flags: FlowModFlags::EMPTY,
            match_: m,
            instructions: ins,
        }
    }
    pub fn add(table_id: u8, priority: u16, m: Match, instructions: Vec<Instruction>) -> Self {
        Self::new(FlowModCommand::Add, table_id, priority, m, instructions)
    }
    pub fn modify(table_id: u8, m: Match, instructions: Vec<Instruction>) -> Self {
        Self::new(FlowModCommand::Modify, table_id, 0, m, instructions)
    }
    pub fn modify_strict(
        table_id: u8,
        priority: u16,
        m: Match,
        instructions: Vec<Instruction>,
    ) -> Self {
        Self::new(
            FlowModCommand::ModifyStrict,
            table_id,
            priority,
            m,
            instructions,
        )
    }
    /// Deletes matching flows (non-strict) in `table_id` (or [`TABLE_ALL`]).
    pub fn delete(table_id: u8, m: Match) -> Self {
        Self::new(FlowModCommand::Delete, table_id, 0, m, Vec::new())
    }
    pub fn delete_strict(table_id: u8, priority: u16, m: Match) -> Self {
        Self::new(
            FlowModCommand::DeleteStrict,
            table_id,
            priority,
            m,
            Vec::new(),
        )
    }
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.cookie = cookie;
        self
    }
    /// For modify/delete: only flows whose cookie matches under the mask.
    pub fn cookie_mask(mut self, cookie: u64, mask: u64) -> Self {
        self.cookie = cookie;
        self.cookie_mask = mask;
        self
    }
    pub fn flags(mut self, flags: FlowModFlags) -> Self {
        self.flags = flags;
        self
    }
    pub fn timeouts(mut self, idle: u16, hard: u16) -> Self {
        self.idle_timeout = idle;
        self.hard_timeout = hard;
        self
    }
    pub fn out_port(mut self, port: u32) -> Self {
        self.out_port = port;
        self
    }
    pub fn out_group(mut self, group: u32) -> Self {
        self.out_group = group;
        self
    }
    pub fn buffer_id(mut self, id: u32) -> Self {
        self.buffer_id = id;
        self
    }

    pub fn buffer_len(&self) -> usize {
        40 + self.match_.buffer_len() + instruction::list_len(&self.instructions)
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u64(self.cookie);
        dst.put_u64(self.cookie_mask);
        dst.put_u8(self.table_id);
        dst.put_u8(self.command.into());
        dst.put_u16(self.idle_timeout);
        dst.put_u16(self.hard_timeout);
        dst.put_u16(self.priority);
        dst.put_u32(self.buffer_id);
        dst.put_u32(self.out_port);
        dst.put_u32(self.out_group);
        dst.put_u16(self.flags.0);
        dst.put_bytes(0, 2);
        self.match_.emit(dst);
        instruction::emit_list(&self.instructions, dst);
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<FlowMod, DecodeError> {
        r.what = "flow_mod";
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = r.u8()?.into();
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = FlowModFlags(r.u16()?);
        r.skip(2)?;
        let match_ = Match::parse(r, "flow_mod match")?;
        let instructions = instruction::parse_list(r)?;
        Ok(FlowMod {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            match_,
            instructions,
        })
    }
}

open_enum! {
    pub enum FlowRemovedReason: u8 {
        IdleTimeout = 0 => "idle",
        HardTimeout = 1 => "hard",
        Delete = 2 => "delete",
        GroupDelete = 3 => "group_delete",
        MeterDelete = 4 => "meter_delete",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRemoved {
    pub cookie: u64,
    pub priority: u16,
    pub reason: FlowRemovedReason,
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub packet_count: u64,
    pub byte_count: u64,
    #[serde(rename = "match")]
    pub match_: Match,
}

impl FlowRemoved {
    pub fn buffer_len(&self) -> usize {
        40 + self.match_.buffer_len()
    }
    pub fn emit(&self, dst: &mut BytesMut) {
        dst.put_u64(self.cookie);
        dst.put_u16(self.priority);
        dst.put_u8(self.reason.into());
        dst.put_u8(self.table_id);
        dst.put_u32(self.duration_sec);
        dst.put_u32(self.duration_nsec);
        dst.put_u16(self.idle_timeout);
        dst.put_u16(self.hard_timeout);
        dst.put_u64(self.packet_count);
        dst.put_u64(self.byte_count);
        self.match_.emit(dst);
    }
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<FlowRemoved, DecodeError> {
        r.what = "flow_removed";
        let v = FlowRemoved {
            cookie: r.u64()?,
            priority: r.u16()?,
            reason: r.u8()?.into(),
            table_id: r.u8()?,
            duration_sec: r.u32()?,
            duration_nsec: r.u32()?,
            idle_timeout: r.u16()?,
            hard_timeout: r.u16()?,
            packet_count: r.u64()?,
            byte_count: r.u64()?,
            match_: Match::parse(r, "flow_removed match")?,
        };
        r.finish()?;
        Ok(v)
    }
}
