package main

import (
	"context"
	"testing"

	"filippo.io/age"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/storage/s3"
)

// TestHasPlainForm: only a store that can be written without create-only
// writes (S3), bare or under encryption, makes the refusal name
// conditional-writes; for others no key can help.
func TestHasPlainForm(t *testing.T) {
	sc, err := s3.New(context.Background(), s3.Options{Bucket: "b", Region: "us-east-1", AccessKeyID: "k", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	enc := func(c storage.Client) storage.Client {
		e, err := agecrypt.New(c, agecrypt.Options{Replica: "r", Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, tc := range []struct {
		name string
		c    storage.Client
		want bool
	}{
		{"s3", sc, true},
		{"file", fc, false},
		{"age over s3", enc(sc), true},
		{"age over file", enc(fc), false},
	} {
		if got := hasPlainForm(tc.c); got != tc.want {
			t.Errorf("%s: hasPlainForm = %v, want %v", tc.name, got, tc.want)
		}
	}
}
