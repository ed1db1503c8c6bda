"""What a person reads: text timeline, pictures, reports, README tables, the demo.

Views read result documents and sessions; they never drive a world."""
