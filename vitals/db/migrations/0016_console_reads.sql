-- The console's patient view (issue 16) shows the device binding: the read API may read
-- which devices a patient wore, looked up by patient (the key is by device). Re-appliable.
CREATE INDEX IF NOT EXISTS device_patients_patient ON device_patients (patient_id, valid_from);

GRANT SELECT ON device_patients TO vitals_reader;
