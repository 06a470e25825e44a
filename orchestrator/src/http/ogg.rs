//! Ogg Opus pages for `response_format: "opus"`: one Opus packet per
//! 20 ms frame, the first audio page at once.

/// Ogg Opus (RFC 7845): the two header pages, then the packets. The first
/// audio page leaves at once; later pages carry three packets (60 ms), a
/// balance of latency and page overhead.
pub(super) struct OggOpus {
    writer: ogg::PacketWriter<'static, Vec<u8>>,
    serial: u32,
    pre_skip: u16,
    granule: u64,
    packets: u64,
}

/// Audio packets per Ogg page after the first.
const PACKETS_PER_PAGE: u64 = 3;

impl OggOpus {
    pub(super) fn new() -> Self {
        // libopus's encoder delay at 48 kHz (VoIP), which decoders skip.
        let pre_skip = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .and_then(|mut e| e.get_lookahead())
            .map_or(312, |n| n as u16);
        Self {
            writer: ogg::PacketWriter::new(Vec::new()),
            serial: rand_serial(),
            pre_skip,
            granule: u64::from(pre_skip),
            packets: 0,
        }
    }

    fn take(&mut self, out: &mut Vec<u8>) {
        out.append(self.writer.inner_mut());
    }

    pub(super) fn headers(&mut self, out: &mut Vec<u8>) {
        use ogg::PacketWriteEndInfo::EndPage;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        let vendor = concat!("tts-orchestrator ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes());
        // Writing into a Vec cannot fail.
        let _ = self.writer.write_packet(head, self.serial, EndPage, 0);
        let _ = self.writer.write_packet(tags, self.serial, EndPage, 0);
        self.take(out);
    }

    pub(super) fn packet(&mut self, packet: &[u8], samples: u32, out: &mut Vec<u8>) {
        use ogg::PacketWriteEndInfo::{EndPage, NormalPacket};
        self.granule += u64::from(samples);
        self.packets += 1;
        let end = if self.packets == 1 || self.packets.is_multiple_of(PACKETS_PER_PAGE) {
            EndPage
        } else {
            NormalPacket
        };
        let _ = self
            .writer
            .write_packet(packet.to_vec(), self.serial, end, self.granule);
        self.take(out);
    }

    /// Ends the stream: an empty last page with the final granule (the
    /// packets' real samples, so the padding of the last frame is trimmed).
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = self.writer.write_packet(
            Vec::new(),
            self.serial,
            ogg::PacketWriteEndInfo::EndStream,
            self.granule,
        );
        self.take(out);
    }
}

fn rand_serial() -> u32 {
    uuid::Uuid::new_v4().as_u64_pair().0 as u32
}
