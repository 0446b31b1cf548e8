// Java's SunPKCS11 provider on the hsmcloud PKCS#11 library, as an application would use it:
// RSA and EC key pairs generated in the appliance with KeyPairGenerator, SHA256withRSA and
// SHA256withECDSA signatures from 8 threads verified with Java's default providers, AES-256-GCM
// through the appliance decrypted by SunJCE, a tampered tag refused, ECDH with a SunEC peer and
// HMAC-SHA256 equal to SunJCE's.
//
//     java HsmJavaCheck CONFIG_FILE PIN
//
// Prints "name: value" lines the test checks (public keys, a signature, a ciphertext) and exits 0
// only when every check passed.
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Security;
import java.security.Signature;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.KeyAgreement;
import javax.crypto.KeyGenerator;
import javax.crypto.Mac;
import javax.crypto.SecretKey;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public class HsmJavaCheck {
    static final int THREADS = 8;
    static final int SIGNATURES_PER_THREAD = 6;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    // The public key as Java's default provider sees it (from its X.509 encoding).
    static PublicKey plain(PublicKey key, String algorithm) throws Exception {
        return KeyFactory.getInstance(algorithm).generatePublic(new X509EncodedKeySpec(key.getEncoded()));
    }

    static int signFromThreads(Provider hsm, String algorithm, PrivateKey priv, PublicKey pub) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(THREADS);
        List<Future<Integer>> results = new ArrayList<>();
        for (int t = 0; t < THREADS; t++) {
            final int thread = t;
            results.add(pool.submit(() -> {
                int verified = 0;
                for (int i = 0; i < SIGNATURES_PER_THREAD; i++) {
                    byte[] message = ("thread " + thread + " message " + i).getBytes("UTF-8");
                    Signature signer = Signature.getInstance(algorithm, hsm);
                    signer.initSign(priv);
                    signer.update(message);
                    byte[] signature = signer.sign();
                    Signature verifier = Signature.getInstance(algorithm);
                    check(verifier.getProvider() != hsm, "the verifier is Java's own provider");
                    verifier.initVerify(pub);
                    verifier.update(message);
                    check(verifier.verify(signature), algorithm + " signature verifies");
                    verifier.initVerify(pub);
                    verifier.update(("another " + i).getBytes("UTF-8"));
                    check(!verifier.verify(signature), algorithm + " signature is bound to its message");
                    verified++;
                }
                return verified;
            }));
        }
        int total = 0;
        for (Future<Integer> f : results) {
            total += f.get();
        }
        pool.shutdown();
        return total;
    }

    public static void main(String[] args) throws Exception {
        Provider hsm = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(hsm);
        KeyStore store = KeyStore.getInstance("PKCS11", hsm);
        store.load(null, args[1].toCharArray());
        System.out.println("provider: " + hsm.getName());

        KeyPairGenerator rsaGen = KeyPairGenerator.getInstance("RSA", hsm);
        rsaGen.initialize(2048);
        KeyPair rsa = rsaGen.generateKeyPair();
        check(rsa.getPrivate().getEncoded() == null, "the RSA private key stays in the appliance");
        PublicKey rsaPub = plain(rsa.getPublic(), "RSA");
        System.out.println("rsa-public: " + Base64.getEncoder().encodeToString(rsaPub.getEncoded()));

        KeyPairGenerator ecGen = KeyPairGenerator.getInstance("EC", hsm);
        ecGen.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair ec = ecGen.generateKeyPair();
        check(ec.getPrivate().getEncoded() == null, "the EC private key stays in the appliance");
        PublicKey ecPub = plain(ec.getPublic(), "EC");
        System.out.println("ec-public: " + Base64.getEncoder().encodeToString(ecPub.getEncoded()));

        System.out.println("rsa-verified: " + signFromThreads(hsm, "SHA256withRSA", rsa.getPrivate(), rsaPub));
        System.out.println("ec-verified: " + signFromThreads(hsm, "SHA256withECDSA", ec.getPrivate(), ecPub));

        byte[] message = "signed by the appliance".getBytes("UTF-8");
        Signature signer = Signature.getInstance("SHA256withRSA", hsm);
        signer.initSign(rsa.getPrivate());
        signer.update(message);
        System.out.println("rsa-signature: " + Base64.getEncoder().encodeToString(signer.sign()));

        // AES-256-GCM: a key generated in the appliance round-trips; a known key imported into
        // the appliance encrypts what SunJCE decrypts.
        SecureRandom random = new SecureRandom();
        byte[] iv = new byte[12];
        random.nextBytes(iv);
        byte[] aad = "header".getBytes("UTF-8");
        byte[] plaintext = new byte[4096];
        random.nextBytes(plaintext);

        KeyGenerator aesGen = KeyGenerator.getInstance("AES", hsm);
        aesGen.init(256);
        SecretKey generated = aesGen.generateKey();
        check(generated.getEncoded() == null, "the generated AES key stays in the appliance");
        Cipher gcm = Cipher.getInstance("AES/GCM/NoPadding", hsm);
        gcm.init(Cipher.ENCRYPT_MODE, generated, new GCMParameterSpec(128, iv));
        gcm.updateAAD(aad);
        byte[] sealed = gcm.doFinal(plaintext);
        check(sealed.length == plaintext.length + 16, "GCM adds a 16-byte tag");
        gcm.init(Cipher.DECRYPT_MODE, generated, new GCMParameterSpec(128, iv));
        gcm.updateAAD(aad);
        check(Arrays.equals(gcm.doFinal(sealed), plaintext), "GCM decrypts in the appliance");
        sealed[5] ^= 1;
        gcm.init(Cipher.DECRYPT_MODE, generated, new GCMParameterSpec(128, iv));
        gcm.updateAAD(aad);
        try {
            gcm.doFinal(sealed);
            check(false, "a tampered GCM ciphertext is refused");
        } catch (AEADBadTagException expected) {
            System.out.println("gcm-tampered: refused");
        }

        byte[] known = new byte[32];
        random.nextBytes(known);
        SecretKey imported = (SecretKey) SecretKeyFactory.getInstance("AES", hsm)
                .translateKey(new SecretKeySpec(known, "AES"));
        byte[] iv2 = new byte[12];
        random.nextBytes(iv2);
        gcm = Cipher.getInstance("AES/GCM/NoPadding", hsm);
        gcm.init(Cipher.ENCRYPT_MODE, imported, new GCMParameterSpec(128, iv2));
        gcm.updateAAD(aad);
        byte[] byHsm = gcm.doFinal(plaintext);
        Cipher sunjce = Cipher.getInstance("AES/GCM/NoPadding", "SunJCE");
        sunjce.init(Cipher.DECRYPT_MODE, new SecretKeySpec(known, "AES"), new GCMParameterSpec(128, iv2));
        sunjce.updateAAD(aad);
        check(Arrays.equals(sunjce.doFinal(byHsm), plaintext), "SunJCE decrypts the appliance's GCM");
        HexFormat hex = HexFormat.of();
        System.out.println("gcm-key: " + hex.formatHex(known));
        System.out.println("gcm-iv: " + hex.formatHex(iv2));
        System.out.println("gcm-aad: " + hex.formatHex(aad));
        System.out.println("gcm-plaintext-sha256: " + hex.formatHex(
                java.security.MessageDigest.getInstance("SHA-256").digest(plaintext)));
        System.out.println("gcm-ciphertext: " + Base64.getEncoder().encodeToString(byHsm));

        // ECDH with a software peer: both sides agree (the configuration makes generated EC
        // private keys derive-capable and the derived secret readable, as SunPKCS11 reads it back)
        KeyPairGenerator peerGen = KeyPairGenerator.getInstance("EC", "SunEC");
        peerGen.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair peer = peerGen.generateKeyPair();
        KeyAgreement inHsm = KeyAgreement.getInstance("ECDH", hsm);
        inHsm.init(ec.getPrivate());
        inHsm.doPhase(peer.getPublic(), true);
        KeyAgreement inJava = KeyAgreement.getInstance("ECDH", "SunEC");
        inJava.init(peer.getPrivate());
        inJava.doPhase(ecPub, true);
        check(Arrays.equals(inHsm.generateSecret(), inJava.generateSecret()), "ECDH agrees with SunEC");
        System.out.println("ecdh: agreed");

        // HMAC-SHA256 in the appliance equals SunJCE's
        Mac hmac = Mac.getInstance("HmacSHA256", hsm);
        hmac.init(new SecretKeySpec(known, "HmacSHA256"));
        Mac reference = Mac.getInstance("HmacSHA256", "SunJCE");
        reference.init(new SecretKeySpec(known, "HmacSHA256"));
        check(Arrays.equals(hmac.doFinal(plaintext), reference.doFinal(plaintext)), "HMAC equals SunJCE's");
        System.out.println("hmac: equal");
        System.out.println("all checks passed");
    }
}
