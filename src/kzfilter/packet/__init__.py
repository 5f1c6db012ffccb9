"""Packets: capture reading (pcap, pcapng, compressed), dissection, application-layer names."""
