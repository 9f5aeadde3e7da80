// The HAPI FHIR validator (R4), offline: validates the JSON resources named on the command
// line against the R4 core definitions and the profiles they claim (meta.profile), with
// the definitions shipped in hapi-fhir-validation-resources-r4 and no terminology server.
// Run as a single-file program: java -cp '.local/fhir-validator/<version>/libs/*'
// tests/support/fhir/FhirValidate.java a.json b.json ... Prints one line per message:
// path<TAB>severity<TAB>location<TAB>message, then path<TAB>DONE. Used by
// tests/support/fhir/validator.py.

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class FhirValidate {
    public static void main(String[] args) throws Exception {
        FhirContext context = FhirContext.forR4();
        ValidationSupportChain support = new ValidationSupportChain(
                new DefaultProfileValidationSupport(context),
                new CommonCodeSystemsTerminologyService(context),
                new InMemoryTerminologyServerValidationSupport(context),
                new SnapshotGeneratingValidationSupport(context));
        FhirInstanceValidator instance = new FhirInstanceValidator(support);
        // Offline: a reference to a resource this process cannot fetch is not an error.
        instance.setAnyExtensionsAllowed(true);
        FhirValidator validator = context.newValidator().registerValidatorModule(instance);
        for (String name : args) {
            ValidationResult result = validator.validateWithResult(Files.readString(Path.of(name)));
            for (SingleValidationMessage message : result.getMessages()) {
                System.out.println(name + "\t" + message.getSeverity() + "\t"
                        + message.getLocationString() + "\t"
                        + message.getMessage().replace('\n', ' ').replace('\t', ' '));
            }
            System.out.println(name + "\tDONE");
        }
    }
}
