-- The language a person wants incoming text and voice translated to (BCP 47, e.g. "es").
ALTER TABLE users ADD COLUMN receive_language TEXT;
