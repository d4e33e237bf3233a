-- A sender's own id for a message, so a retried send stores nothing new. Only messages that
-- carry one are in the index.
ALTER TABLE messages ADD COLUMN client_id TEXT;
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id)
    WHERE client_id IS NOT NULL;

-- Which messages refer to which uploads, so deleting the last message that refers to a file
-- removes the file too.
CREATE TABLE message_files (
    message_id  INTEGER NOT NULL,
    file_id     TEXT NOT NULL,
    PRIMARY KEY (file_id, message_id)
) WITHOUT ROWID;
CREATE INDEX message_files_message ON message_files(message_id);
INSERT OR IGNORE INTO message_files (message_id, file_id)
    SELECT m.id, json_extract(j.value, '$.file_id')
      FROM messages m, json_each(m.attachments) j
     WHERE m.attachments IS NOT NULL AND m.deleted_at IS NULL
       AND json_extract(j.value, '$.file_id') IS NOT NULL;
