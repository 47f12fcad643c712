package s3

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/understudy-db/understudy/internal/storage"
)

// TestDescribeCredentialErrors: credentials the store refuses and a chain
// that finds none both wrap storage.ErrCredentials (follow fails fast on
// them) and say what to check or set; other errors do not.
func TestDescribeCredentialErrors(t *testing.T) {
	c := &Client{opts: Options{Bucket: "b", Endpoint: "http://127.0.0.1:1"}, credDesc: "access-key-id \"k\" and its secret-access-key"}
	tests := []struct {
		name     string
		err      error
		env      map[string]string
		isCreds  bool
		contains []string
	}{
		{"refused", &smithy.GenericAPIError{Code: "InvalidAccessKeyId"}, nil, true, []string{"refused the credentials", `access-key-id "k"`}},
		{"denied", &smithy.GenericAPIError{Code: "AccessDenied"}, nil, true, []string{"access denied", `bucket "b"`}},
		{"none found", &noCredentialsError{errors.New("no EC2 IMDS role found")}, nil, true,
			[]string{"no credentials found", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "no EC2 IMDS role found"}},
		{"none found, empty variable", &noCredentialsError{errors.New("x")}, map[string]string{"AWS_ACCESS_KEY_ID": ""}, true,
			[]string{"(AWS_ACCESS_KEY_ID set but empty)"}},
		{"other", &smithy.GenericAPIError{Code: "InternalError"}, nil, false, []string{"InternalError"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", "set")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "set")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := c.describe(context.Background(), "list", "app/0000/", tt.err)
			if errors.Is(err, storage.ErrCredentials) != tt.isCreds {
				t.Errorf("%v: errors.Is(ErrCredentials) = %v, want %v", err, !tt.isCreds, tt.isCreds)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q lacks %q", err, s)
				}
			}
		})
	}
}
