-- Stream positions are now derived from deliveries (the writer keeps them in memory).
ALTER TABLE users DROP COLUMN last_seq;
