//! The ublk kernel interface (include/uapi/linux/ublk_cmd.h) as far as udm uses it: the
//! legacy command numbers every kernel since 6.0 accepts, and the command structures.

/// Control commands (on /dev/ublk-control, 128-byte SQEs).
pub const CMD_ADD_DEV: u32 = 0x04;
pub const CMD_DEL_DEV: u32 = 0x05;
pub const CMD_START_DEV: u32 = 0x06;
pub const CMD_STOP_DEV: u32 = 0x07;
pub const CMD_SET_PARAMS: u32 = 0x08;

/// I/O commands (on /dev/ublkcN).
pub const IO_FETCH_REQ: u32 = 0x20;
pub const IO_COMMIT_AND_FETCH_REQ: u32 = 0x21;

/// `ublksrv_io_desc.op_flags & 0xff`.
pub const OP_READ: u32 = 0;
pub const OP_WRITE: u32 = 1;
pub const OP_FLUSH: u32 = 2;
pub const OP_DISCARD: u32 = 3;
pub const OP_WRITE_ZEROES: u32 = 5;
/// `ublksrv_io_desc.op_flags` bits.
pub const IO_F_FUA: u32 = 1 << 13;
pub const IO_F_NOUNMAP: u32 = 1 << 15;

pub const IO_RES_OK: i32 = 0;
pub const IO_RES_ABORT: i32 = -libc::ENODEV;

pub const MAX_QUEUE_DEPTH: usize = 4096;

pub const PARAM_TYPE_BASIC: u32 = 1 << 0;
pub const PARAM_TYPE_DISCARD: u32 = 1 << 1;
pub const ATTR_READ_ONLY: u32 = 1 << 0;
pub const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
pub const ATTR_FUA: u32 = 1 << 3;

/// `struct ublksrv_ctrl_cmd` (32 bytes, at the start of the SQE's command area).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct CtrlCmd {
    pub dev_id: u32,
    pub queue_id: u16,
    pub len: u16,
    pub addr: u64,
    pub data: [u64; 1],
    pub dev_path_len: u16,
    pub pad: u16,
    pub reserved: u32,
}

/// `struct ublksrv_ctrl_dev_info` (64 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DevInfo {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub pad0: u16,
    pub max_io_buf_bytes: u32,
    pub dev_id: u32,
    pub ublksrv_pid: i32,
    pub pad1: u32,
    pub flags: u64,
    pub ublksrv_flags: u64,
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub reserved1: u64,
    pub reserved2: u64,
}

/// `struct ublksrv_io_desc` (24 bytes, read-only mmap of /dev/ublkcN).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IoDesc {
    pub op_flags: u32,
    pub nr_sectors: u32,
    pub start_sector: u64,
    pub addr: u64,
}

/// `struct ublksrv_io_cmd` (16 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IoCmd {
    pub q_id: u16,
    pub tag: u16,
    pub result: i32,
    pub addr: u64,
}

/// `struct ublk_param_basic`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ParamBasic {
    pub attrs: u32,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,
    pub max_sectors: u32,
    pub chunk_sectors: u32,
    pub dev_sectors: u64,
    pub virt_boundary_mask: u64,
}

/// `struct ublk_param_discard`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ParamDiscard {
    pub discard_alignment: u32,
    pub discard_granularity: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    pub max_discard_segments: u16,
    pub reserved0: u16,
}

/// `struct ublk_params` as of 6.1 (basic + discard).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Params {
    pub len: u32,
    pub types: u32,
    pub basic: ParamBasic,
    pub discard: ParamDiscard,
}

/// The bytes of a plain-data command structure.
pub fn bytes<T: Copy, const N: usize>(v: &T) -> [u8; N] {
    let mut out = [0u8; N];
    let n = std::mem::size_of::<T>().min(N);
    // SAFETY: `T` is a `#[repr(C)]` plain-data struct (Copy, no padding read as anything but
    // bytes), `v` is valid for `size_of::<T>()` bytes and `out` for `N >= n` bytes; the two
    // do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, out.as_mut_ptr(), n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<CtrlCmd>(), 32);
        assert_eq!(size_of::<DevInfo>(), 64);
        assert_eq!(size_of::<IoDesc>(), 24);
        assert_eq!(size_of::<IoCmd>(), 16);
        assert_eq!(size_of::<ParamBasic>(), 32);
        assert_eq!(size_of::<ParamDiscard>(), 20);
        assert_eq!(size_of::<Params>(), 64);
    }
}
